//! Webhook signing secrets at rest: sealed with ChaCha20-Poly1305 under a key the operator keeps
//! in a file outside the data directory (`secrets_key_file`), so a copy of the data directory (a
//! backup, a stolen disk) does not let anyone forge the relay's webhooks. Each sealed secret is
//! bound to the record it belongs to (its endpoint or merchant id), so a sealed value moved to
//! another record does not open.

use crate::StoreError;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use sha2::{Digest, Sha256};

/// What a sealed secret starts with.
const PREFIX: &str = "sealed1:";

/// The key that seals webhook secrets.
pub struct SecretsKey {
    key: LessSafeKey,
    fingerprint: [u8; 8],
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

impl SecretsKey {
    /// A key from 32 bytes.
    pub fn new(bytes: [u8; 32]) -> SecretsKey {
        let fingerprint: [u8; 32] = Sha256::new()
            .chain_update(b"relay secrets key fingerprint\0")
            .chain_update(bytes)
            .finalize()
            .into();
        SecretsKey {
            // A 32-byte key is what ChaCha20-Poly1305 takes: this cannot fail.
            key: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte key"),
            ),
            fingerprint: fingerprint[..8].try_into().unwrap_or_default(),
        }
    }

    /// A key from a file holding 64 hex digits (surrounding whitespace ignored), e.g. made with
    /// `openssl rand -hex 32`.
    pub fn from_file(path: &std::path::Path) -> Result<SecretsKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| {
            format!(
                "{} must hold 64 hex digits (32 random bytes)",
                path.display()
            )
        })?;
        Ok(SecretsKey::new(bytes))
    }

    /// Identifies the key without revealing it (stored, to refuse another key later).
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// `secret` sealed for the record `owner`.
    pub fn seal(&self, owner: &str, secret: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand_nonce();
        let mut buf = secret.as_bytes().to_vec();
        // Sealing in memory with a fresh nonce cannot fail.
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(owner.as_bytes()),
                &mut buf,
            )
            .expect("sealing in memory");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}", hex::encode(out))
    }

    /// The secret `stored` for `owner`: opened if sealed, as it is if stored before sealing.
    pub fn open(&self, owner: &str, stored: &str) -> Result<String, StoreError> {
        let Some(hex_part) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let bad = || StoreError::Corrupt {
            what: "sealed secret",
            reason: "it does not open with this secrets key (or it was moved to another record)"
                .into(),
        };
        let raw = hex::decode(hex_part).map_err(|_| bad())?;
        if raw.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buf)
            .map_err(|_| bad())?;
        String::from_utf8(plain.to_vec()).map_err(|_| bad())
    }
}

/// `secret` as a backend stores it: sealed for `owner` (the record's id) when there is a key, and
/// as it is when there is none or it is sealed already.
pub fn seal_with(
    key: Option<&SecretsKey>,
    owner: &str,
    secret: &relay_core::Secret,
) -> relay_core::Secret {
    match key {
        Some(k) if !is_sealed(secret.expose_secret()) => {
            relay_core::Secret::from_stored(k.seal(owner, secret.expose_secret()))
        }
        _ => secret.clone(),
    }
}

/// A stored secret opened for `owner`. A sealed one without a key is refused: the store was
/// sealed with a key this relay was not given.
pub fn open_with(
    key: Option<&SecretsKey>,
    owner: &str,
    stored: &relay_core::Secret,
) -> Result<relay_core::Secret, StoreError> {
    match key {
        Some(k) => Ok(relay_core::Secret::from_stored(
            k.open(owner, stored.expose_secret())?,
        )),
        None if is_sealed(stored.expose_secret()) => Err(StoreError::SecretsKey {
            reason: "sealed, and no secrets key was given".into(),
        }),
        None => Ok(stored.clone()),
    }
}

/// Whether a stored secret is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

fn rand_nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut n = [0u8; NONCE_LEN];
    // The system's random source failing is not something to go on after.
    ring::rand::SystemRandom::new()
        .fill(&mut n)
        .expect("the system random source");
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_for_its_record() {
        let key = SecretsKey::new([7; 32]);
        let sealed = key.seal("we_1", "whsec_abc");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(
            sealed,
            key.seal("we_1", "whsec_abc"),
            "a fresh nonce each time"
        );
        assert_eq!(key.open("we_1", &sealed).unwrap(), "whsec_abc");
        assert!(
            key.open("we_2", &sealed).is_err(),
            "moved to another record"
        );
        assert!(SecretsKey::new([8; 32]).open("we_1", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(key.open("we_1", &tampered).is_err());
        assert_eq!(key.open("we_1", "whsec_plain").unwrap(), "whsec_plain");
        assert_ne!(key.fingerprint(), SecretsKey::new([8; 32]).fingerprint());
        assert!(!format!("{key:?}").contains('7'));
    }
}
