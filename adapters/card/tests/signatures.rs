//! Signature verification against reference headers made by the official `stripe` Python library
//! (installed in tools/venv by scripts/setup.sh) for the same secret, payload and timestamp. For
//! every case our verdict must equal the expected one and the library's own `verify_header`.

use relay_card::{verify_signature, SignatureError, DEFAULT_TOLERANCE_SECS};
use std::io::Write;
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"
import json, sys, time, stripe
cases = json.load(sys.stdin)
out = []
for c in cases:
    parts = []
    for secret in c["sign_with"]:
        h = stripe.WebhookSignature.generate_signature_header(c["signed_payload"], secret, timestamp=c["t"])
        parts.append(h.split(",", 1)[1])
    header = c.get("raw_header") or ("t=%d," % c["t"] + ",".join(parts))
    try:
        stripe.WebhookSignature.verify_header(c["payload"], header, c["secret"], tolerance=300)
        verdict = True
    except Exception:
        verdict = False
    out.append({"header": header, "stripe_accepts": verdict, "now": int(time.time())})
print(json.dumps(out))
"#;

struct Case {
    name: &'static str,
    payload: &'static str,
    signed_payload: &'static str,
    secret: &'static str,
    sign_with: Vec<&'static str>,
    age: i64,
    raw_header: Option<&'static str>,
    expect: Result<(), SignatureError>,
}

#[test]
fn verdicts_match_the_official_library() {
    let body =
        r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"}}}"#;
    let cases = [
        Case {
            name: "valid",
            payload: body,
            signed_payload: body,
            secret: "whsec_a",
            sign_with: vec!["whsec_a"],
            age: 5,
            raw_header: None,
            expect: Ok(()),
        },
        Case {
            name: "tampered body",
            payload: r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_2"}}}"#,
            signed_payload: body,
            secret: "whsec_a",
            sign_with: vec!["whsec_a"],
            age: 5,
            raw_header: None,
            expect: Err(SignatureError::Mismatch),
        },
        Case {
            name: "wrong secret",
            payload: body,
            signed_payload: body,
            secret: "whsec_a",
            sign_with: vec!["whsec_b"],
            age: 5,
            raw_header: None,
            expect: Err(SignatureError::Mismatch),
        },
        Case {
            name: "stale timestamp",
            payload: body,
            signed_payload: body,
            secret: "whsec_a",
            sign_with: vec!["whsec_a"],
            age: 301 + 60,
            raw_header: None,
            expect: Err(SignatureError::Stale { tolerance: 300 }),
        },
        Case {
            name: "two v1 values, second matches",
            payload: body,
            signed_payload: body,
            secret: "whsec_a",
            sign_with: vec!["whsec_old", "whsec_a"],
            age: 5,
            raw_header: None,
            expect: Ok(()),
        },
        Case {
            name: "malformed header",
            payload: body,
            signed_payload: body,
            secret: "whsec_a",
            sign_with: vec!["whsec_a"],
            age: 5,
            raw_header: Some("garbage"),
            expect: Err(SignatureError::Malformed),
        },
        Case {
            name: "no v1",
            payload: body,
            signed_payload: body,
            secret: "whsec_a",
            sign_with: vec!["whsec_a"],
            age: 5,
            raw_header: Some("t=12345"),
            expect: Err(SignatureError::Mismatch),
        },
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let input: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({"payload": c.payload, "signed_payload": c.signed_payload, "secret": c.secret,
                "sign_with": c.sign_with, "t": now - c.age, "raw_header": c.raw_header})
        })
        .collect();
    let python = relay_testnet::tools_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (case, r) in cases.iter().zip(&results) {
        let header = r["header"].as_str().unwrap();
        let ours = verify_signature(
            Some(header),
            case.payload.as_bytes(),
            &[case.secret],
            r["now"].as_i64().unwrap(),
            DEFAULT_TOLERANCE_SECS,
        );
        assert_eq!(ours, case.expect, "{}: {header}", case.name);
        assert_eq!(
            ours.is_ok(),
            r["stripe_accepts"].as_bool().unwrap(),
            "{}: the official library disagrees",
            case.name
        );
    }
    // A missing header is refused before anything else.
    assert_eq!(
        verify_signature(None, body.as_bytes(), &["whsec_a"], now, 300),
        Err(SignatureError::Missing)
    );
}
