//! Where the relay may send a merchant's webhooks: public internet addresses only, unless the
//! operator allows private ones (`relay dev`, tests). Without this, any API key would turn the
//! relay into a scanner that POSTs into its own network (its own port, the cloud metadata
//! service, the database).
//!
//! The check runs twice: on the URL when an endpoint is registered, and on every address a name
//! resolves to when the relay connects (the dispatcher connects only to addresses that passed,
//! so a name that resolves to a public address now and a private one later gets nowhere).

use crate::error::CoreError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // An IPv4 address inside IPv6 (mapped, or NAT64) is judged as that IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0x64 && s[1] == 0xff9b {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible and other ::/96 forms
}

fn refused(url: &str, reason: &str) -> CoreError {
    CoreError::InvalidField {
        field: "webhook_url",
        reason: format!("{url:?} {reason}"),
    }
}

/// Checks a webhook URL: absolute `http(s)`, no credentials, a host, at most 2,048 bytes, and,
/// unless `allow_private`, not a private destination by its address or its name (`localhost`).
/// Names are checked again, address by address, when the relay connects.
pub fn check_webhook_url(url: &str, allow_private: bool) -> Result<(), CoreError> {
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refused(url, "is not an absolute http(s) URL"));
    }
    let parsed =
        url::Url::parse(url).map_err(|_| refused(url, "is not an absolute http(s) URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(refused(url, "is not an absolute http(s) URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refused(url, "carries credentials"));
    }
    let private = match parsed.host() {
        None => return Err(refused(url, "has no host")),
        Some(url::Host::Ipv4(ip)) => !is_public_v4(ip),
        Some(url::Host::Ipv6(ip)) => !is_public_v6(ip),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost") || !name.contains('.')
        }
    };
    if private && !allow_private {
        return Err(refused(url, "is not a public destination"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_malformed_destinations_are_refused() {
        for url in [
            "http://127.0.0.1:8080/",
            "http://localhost/hook",
            "http://LOCALHOST./",
            "http://relay.localhost/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://172.16.5.4/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[::]/",
            "http://user:pass@example.com/",
            "http://%zz/",
            "http:///nohost",
            "ftp://example.com/",
            "http://intranet/",
        ] {
            assert!(check_webhook_url(url, false).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn public_destinations_pass_and_private_ones_only_when_allowed() {
        for url in [
            "https://shop.example.com/hooks",
            "http://93.184.216.34:8080/x",
            "https://[2606:4700::1111]/",
        ] {
            assert!(check_webhook_url(url, false).is_ok(), "{url} was refused");
        }
        assert!(check_webhook_url("http://127.0.0.1:9/", true).is_ok());
        assert!(check_webhook_url("http://user:pass@127.0.0.1/", true).is_err());
        assert!(is_public("8.8.8.8".parse().unwrap()));
        assert!(!is_public("::ffff:10.1.2.3".parse().unwrap()));
    }
}

/// A node or gateway URL as logs and errors may show it: scheme, host and port only. Credentials
/// (`user:pass@`), and a path or query (where providers put API keys, e.g. `/v3/<key>`), become
/// `…`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => return "…".to_owned(),
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((_, h)) => (true, h),
        None => (false, authority),
    };
    let creds = if userinfo { "…@" } else { "" };
    let tail = if tail.is_empty() || tail == "/" {
        tail
    } else {
        "/…"
    };
    format!("{scheme}://{creds}{host}{tail}")
}

/// `text` (an error message) with every secret part of `url` (credentials, path, query) that
/// appears in it replaced by `…`.
pub fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    if let Some((_, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let mut secrets: Vec<&str> = Vec::new();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            secrets.push(userinfo);
        }
        secrets.extend(
            tail.split(['/', '?', '&', '=', '#'])
                .filter(|s| s.len() >= 8),
        );
        for s in secrets {
            out = out.replace(s, "…");
        }
    }
    out
}

/// `text` with every URL in it (`scheme://…` up to a space, quote or bracket) shown as
/// [`redact_url`] shows it: for error messages of libraries that print the URL they called.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |j| j + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ']'))
            .map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn credentials_and_keys_in_paths_never_show() {
        assert_eq!(
            redact_url("https://mainnet.infura.io/v3/0123456789abcdef0123"),
            "https://mainnet.infura.io/…"
        );
        assert_eq!(
            redact_url("http://rpcuser:hunter22@10.0.0.5:8332/wallet/w"),
            "http://…@10.0.0.5:8332/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        assert_eq!(
            redact_url("http://127.0.0.1:8545/"),
            "http://127.0.0.1:8545/"
        );
        assert_eq!(
            redact_url("wss://x.example/ws?apikey=s3cr3t"),
            "wss://x.example/…"
        );
        assert_eq!(redact_url("not a url"), "…");
        let url = "wss://u:pa55word@eth.example/v2/KEY0123456789";
        let e = format!("error connecting to {url}: 401 for /v2/KEY0123456789 (user u:pa55word)");
        let r = redact_in(&e, url);
        assert!(
            !r.contains("pa55word") && !r.contains("KEY0123456789"),
            "{r}"
        );
        assert!(r.contains("eth.example"), "{r}");
        assert_eq!(
            redact_urls_in("error sending request for url (https://mainnet.infura.io/v3/abcdef0123456789): timed out"),
            "error sending request for url (https://mainnet.infura.io/…): timed out"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
    }
}
