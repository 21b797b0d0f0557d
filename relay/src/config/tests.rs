use super::*;

#[test]
fn env_overrides_file_and_secrets_are_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9000\"\nstripe_secret_key = \"sk_test_abc\"\n[rates]\n\"BTC/USD\" = \"60000\"\n",
    )
    .unwrap();
    let env = vec![
        ("RELAY_DATA_DIR".to_owned(), "/tmp/x".to_owned()),
        (
            "RELAY_RATES".to_owned(),
            "ETH/USD=2500, BTC/USD=61000".to_owned(),
        ),
        ("HOME".to_owned(), "/root".to_owned()),
    ];
    let c = Config::load(Some(&path), env).unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.rates["BTC/USD"], "61000");
    assert_eq!(c.rates["ETH/USD"], "2500");
    assert!(!format!("{c:?}").contains("sk_test_abc"));
}

#[test]
fn bad_settings_are_reported() {
    let env = vec![("RELAY_LISTEN".to_owned(), "nowhere".to_owned())];
    let err = Config::load(None, env).unwrap_err();
    assert!(format!("{err:#}").contains("RELAY_LISTEN"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "lisen = \"x\"\n").unwrap();
    assert!(Config::load(Some(&path), vec![]).is_err());
}

#[test]
fn ethereum_settings_and_tokens_from_the_environment() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let c = Config::load(
        None,
        env(&[
            ("RELAY_ETH_RPC_URL", "http://127.0.0.1:8545"),
            (
                "RELAY_ESCROW_ADDRESS",
                "0x5fbdb2315678afecb367f032d93f642f64180aa3",
            ),
            ("RELAY_OPERATOR_KEY", "0xdeadbeef"),
            ("RELAY_ETH_FEE_BPS", "50"),
            (
                "RELAY_TOKENS",
                "USDC:6:0x00000000000000000000000000000000000000d1",
            ),
        ]),
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.eth_fee_bps, 50);
    assert_eq!(c.tokens[0].code, "USDC");
    assert_eq!(c.tokens[0].decimals, 6);
    assert!(
        !format!("{c:?}").contains("deadbeef"),
        "the key is never printed"
    );
    // An Ethereum node without an operator key is refused, as is a bad token list.
    let c = Config::load(
        None,
        env(&[
            ("RELAY_ETH_RPC_URL", "http://127.0.0.1:8545"),
            (
                "RELAY_ESCROW_ADDRESS",
                "0x5fbdb2315678afecb367f032d93f642f64180aa3",
            ),
        ]),
    )
    .unwrap();
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("operator key"));
    assert!(Config::load(None, env(&[("RELAY_TOKENS", "USDC:6")])).is_err());
    assert!(Config::load(None, env(&[("RELAY_ETH_FEE_BPS", "-1")])).is_err());
}

#[test]
fn a_database_url_selects_postgres_and_its_password_is_never_printed() {
    let load = |pairs: &[(&str, &str)]| {
        Config::load(
            None,
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
        )
    };
    let c = load(&[
        (
            "RELAY_DATABASE_URL",
            "postgres://relay:hunter2@127.0.0.1:5432/relay",
        ),
        ("RELAY_LEASE_TTL_SECS", "5"),
    ])
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.lease_ttl_secs, 5);
    assert!(c.database_url.is_some());
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "the password is never printed"
    );
    let refused = |pairs: &[(&str, &str)]| load(pairs).map_or(true, |c| c.validate().is_err());
    assert!(refused(&[(
        "RELAY_DATABASE_URL",
        "mysql://127.0.0.1/relay"
    )]));
    assert!(refused(&[("RELAY_LEASE_TTL_SECS", "1")]));
    assert!(refused(&[("RELAY_LEASE_TTL_SECS", "ten")]));
    // Empty: sled, as without the variable.
    assert!(load(&[("RELAY_DATABASE_URL", "")])
        .unwrap()
        .database_url
        .is_none());
}
