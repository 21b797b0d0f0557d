//! The testnet harness: starts the real components Relay talks to — anvil (Ethereum), a bitcoin
//! regtest node (bcoin, or Bitcoin Core when `BITCOIND_EXE` is set), localstripe (a
//! Stripe-compatible card gateway), PostgreSQL ([`Postgres`]) — each on a free loopback port, waits
//! until it answers, and kills it when the handle is dropped. `forge_build` compiles the contracts with forge and solc-js.
//!
//! The tools come from `scripts/setup.sh`, which installs them into `tools/` of the repository.
//! A missing tool is an error that says so and how to install it; nothing is skipped silently.

pub mod browser;
pub mod btc_wallet;
pub mod postgres;
mod process;
pub mod rates;

pub use postgres::Postgres;
pub use process::{free_port, NodeProcess};
pub use rates::{Feed, RateFeeds};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (`RELAY_REPO_ROOT` overrides the location this crate was built from).
pub fn repo_root() -> PathBuf {
    if let Ok(p) = std::env::var("RELAY_REPO_ROOT") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness crate lives one level below the repository root")
        .to_path_buf()
}

/// `tools/` of the repository, where `scripts/setup.sh` installs everything.
pub fn tools_dir() -> PathBuf {
    repo_root().join("tools")
}

fn require(path: PathBuf, what: &str) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{what} not found at {} — run `scripts/setup.sh` (or `make test`, which runs it)",
            path.display()
        )
    }
}

pub fn anvil_exe() -> Result<PathBuf> {
    require(
        tools_dir().join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
        "anvil",
    )
}

pub fn cast_exe() -> Result<PathBuf> {
    require(
        tools_dir().join("node_modules/@foundry-rs/cast-linux-amd64/bin/cast"),
        "cast",
    )
}

pub fn forge_exe() -> Result<PathBuf> {
    require(
        tools_dir().join("node_modules/@foundry-rs/forge-linux-amd64/bin/forge"),
        "forge",
    )
}

/// A JSON-RPC 2.0 call over HTTP (anvil, Bitcoin Core, bcoin), with optional basic auth.
pub fn json_rpc(
    url: &str,
    auth: Option<(&str, &str)>,
    method: &str,
    params: Value,
) -> Result<Value> {
    let mut req = ureq::post(url).timeout(Duration::from_secs(30));
    if let Some((user, pass)) = auth {
        req = req.set("Authorization", &basic_auth(user, pass));
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let resp: Value = match req.send_json(body) {
        Ok(r) => r.into_json()?,
        // Bitcoin Core answers RPC errors with HTTP 500 and a JSON body.
        Err(ureq::Error::Status(_, r)) => r.into_json()?,
        Err(e) => return Err(anyhow!("{method} to {url}: {e}")),
    };
    match resp.get("error") {
        Some(e) if !e.is_null() => bail!("{method} failed: {e}"),
        _ => Ok(resp.get("result").cloned().unwrap_or(Value::Null)),
    }
}

fn basic_auth(user: &str, pass: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{pass}");
    let bytes = input.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// A local Ethereum node (anvil), chain id 31337, with its ten funded dev accounts.
pub struct Anvil {
    process: NodeProcess,
    port: u16,
}

impl Anvil {
    pub fn spawn() -> Result<Anvil> {
        let port = free_port()?;
        let mut cmd = Command::new(anvil_exe()?);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        let process = NodeProcess::spawn("anvil", cmd)?;
        let anvil = Anvil { process, port };
        anvil.process.wait_until(STARTUP_TIMEOUT, || {
            anvil.rpc("eth_chainId", json!([])).is_ok()
        })?;
        Ok(anvil)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn rpc(&self, method: &str, params: Value) -> Result<Value> {
        json_rpc(&self.url(), None, method, params)
    }

    pub fn chain_id(&self) -> Result<u64> {
        Ok(u64::try_from(hex_quantity(
            &self.rpc("eth_chainId", json!([]))?,
        )?)?)
    }

    /// The same node's WebSocket endpoint (anvil serves both on one port).
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Sets an account's ether balance (wei).
    pub fn set_balance(&self, address: &str, wei: u128) -> Result<()> {
        self.rpc("anvil_setBalance", json!([address, format!("{wei:#x}")]))?;
        Ok(())
    }

    /// Mines `n` blocks now.
    pub fn mine(&self, n: u64) -> Result<()> {
        self.rpc("anvil_mine", json!([format!("{n:#x}")]))?;
        Ok(())
    }

    /// Whether each transaction is mined in its own block as it arrives (anvil's default).
    pub fn set_automine(&self, on: bool) -> Result<()> {
        self.rpc("evm_setAutomine", json!([on]))?;
        Ok(())
    }

    pub fn block_number(&self) -> Result<u64> {
        Ok(u64::try_from(hex_quantity(
            &self.rpc("eth_blockNumber", json!([]))?,
        )?)?)
    }

    /// Moves the chain's clock forward for the next block.
    pub fn increase_time(&self, secs: u64) -> Result<()> {
        self.rpc("evm_increaseTime", json!([secs]))?;
        Ok(())
    }

    pub fn snapshot(&self) -> Result<String> {
        let v = self.rpc("evm_snapshot", json!([]))?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("evm_snapshot: {v}"))
    }

    /// Returns the chain to a snapshot: every later block is gone.
    pub fn revert_to(&self, snapshot: &str) -> Result<()> {
        let ok = self.rpc("evm_revert", json!([snapshot]))?;
        if ok != json!(true) {
            bail!("evm_revert {snapshot}: {ok}");
        }
        Ok(())
    }

    pub fn nonce(&self, address: &str) -> Result<u64> {
        Ok(u64::try_from(hex_quantity(&self.rpc(
            "eth_getTransactionCount",
            json!([address, "latest"]),
        )?)?)?)
    }

    pub fn balance(&self, address: &str) -> Result<u128> {
        hex_quantity(&self.rpc("eth_getBalance", json!([address, "latest"]))?)
    }

    /// Runs `cast` against this node and returns what it printed.
    pub fn cast(&self, args: &[&str]) -> Result<String> {
        let url = self.url();
        let mut all = args.to_vec();
        all.extend(["--rpc-url", url.as_str()]);
        cast(&all)
    }

    /// `cast send` from `key`'s account; returns the transaction hash. With automine off, it
    /// returns once the node has the transaction.
    pub fn send(
        &self,
        key: &str,
        to: &str,
        sig: &str,
        args: &[&str],
        value: &str,
    ) -> Result<String> {
        let mut a = vec!["send", "--private-key", key, "--async", to, sig];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--value", value]);
        self.cast(&a)
    }

    /// `cast call` (a read); returns what the function returned, as cast prints it.
    pub fn call(&self, to: &str, sig: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["call", to, sig];
        a.extend_from_slice(args);
        self.cast(&a)
    }

    /// The receipt's status (true: success), once the transaction is mined.
    pub fn receipt_status(&self, tx: &str) -> Result<Option<bool>> {
        let r = self.rpc("eth_getTransactionReceipt", json!([tx]))?;
        if r.is_null() {
            return Ok(None);
        }
        Ok(Some(r["status"] == json!("0x1")))
    }
}

/// Runs `cast` (without a node: encoding, hashing) and returns what it printed.
pub fn cast(args: &[&str]) -> Result<String> {
    let out = Command::new(cast_exe()?)
        .args(args)
        .output()
        .context("running cast")?;
    if !out.status.success() {
        bail!(
            "cast {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// An Ethereum JSON-RPC quantity (`"0x1a"`).
pub fn hex_quantity(v: &Value) -> Result<u128> {
    let s = v
        .as_str()
        .ok_or_else(|| anyhow!("expected a hex quantity: {v}"))?;
    Ok(u128::from_str_radix(s.trim_start_matches("0x"), 16)?)
}

/// Which bitcoin node implementation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitcoinImpl {
    Bcoin,
    BitcoinCore,
}

/// A bitcoin regtest node, isolated (no peers, loopback only, in-memory or temporary data).
pub struct BitcoinNode {
    process: NodeProcess,
    port: u16,
    api_key: String,
    kind: BitcoinImpl,
}

impl BitcoinNode {
    /// Bitcoin Core if `BITCOIND_EXE` is set, else bcoin from `tools/`.
    pub fn spawn() -> Result<BitcoinNode> {
        match std::env::var_os("BITCOIND_EXE") {
            Some(exe) if !exe.is_empty() => Self::spawn_core(PathBuf::from(exe)),
            _ => Self::spawn_bcoin(),
        }
    }

    pub fn spawn_bcoin() -> Result<BitcoinNode> {
        let bin = require(tools_dir().join("node_modules/bcoin/bin/node"), "bcoin")?;
        let port = free_port()?;
        let p2p_port = free_port()?;
        let api_key = format!("relay-{port}");
        // bcoin keeps the chain in memory; its prefix (config, logs) goes to scratch space.
        let scratch = tempfile::tempdir()?;
        let mut cmd = Command::new("node");
        cmd.arg(bin)
            .arg(format!("--prefix={}", scratch.path().display()))
            .args([
                "--network=regtest",
                "--memory=true",
                "--no-wallet",
                "--listen=false",
                "--max-inbound=0",
                "--seeds=,",
                "--workers=false",
                "--index-tx",
                "--index-address",
                "--log-level=warning",
                "--http-host=127.0.0.1",
                &format!("--http-port={port}"),
                &format!("--port={p2p_port}"),
                &format!("--api-key={api_key}"),
            ]);
        let process = NodeProcess::spawn_with_dir("bcoin", cmd, scratch)?;
        let node = BitcoinNode {
            process,
            port,
            api_key,
            kind: BitcoinImpl::Bcoin,
        };
        node.process.wait_until(STARTUP_TIMEOUT, || {
            node.rpc("getblockchaininfo", json!([])).is_ok()
        })?;
        Ok(node)
    }

    pub fn spawn_core(exe: PathBuf) -> Result<BitcoinNode> {
        let port = free_port()?;
        let p2p_port = free_port()?;
        let api_key = format!("relay-{port}");
        let scratch = tempfile::tempdir()?;
        let datadir = scratch.path().to_path_buf();
        let mut cmd = Command::new(&exe);
        cmd.args([
            "-regtest",
            "-server",
            "-listen=0",
            "-txindex=1",
            "-fallbackfee=0.0002",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            "-rpcuser=relay",
        ])
        .arg(format!("-rpcpassword={api_key}"))
        .arg(format!("-rpcport={port}"))
        .arg(format!("-port={p2p_port}"))
        .arg(format!("-datadir={}", datadir.display()));
        let process = NodeProcess::spawn_with_dir("bitcoind", cmd, scratch)
            .with_context(|| format!("starting {}", exe.display()))?;
        let node = BitcoinNode {
            process,
            port,
            api_key,
            kind: BitcoinImpl::BitcoinCore,
        };
        node.process.wait_until(STARTUP_TIMEOUT, || {
            node.rpc("getblockchaininfo", json!([])).is_ok()
        })?;
        Ok(node)
    }

    pub fn kind(&self) -> BitcoinImpl {
        self.kind
    }

    /// RPC URL without credentials.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// RPC URL with credentials (`http://user:pass@127.0.0.1:port/`), as `RELAY_BTC_RPC_URL` takes it.
    pub fn rpc_url_with_auth(&self) -> String {
        format!("http://relay:{}@127.0.0.1:{}/", self.api_key, self.port)
    }

    pub fn rpc(&self, method: &str, params: Value) -> Result<Value> {
        json_rpc(
            &self.rpc_url(),
            Some(("relay", &self.api_key)),
            method,
            params,
        )
    }

    /// The node's encoding of a version-0 witness program (P2WPKH/P2WSH) as an address. bcoin's
    /// regtest uses the `rb` prefix where Bitcoin Core uses `bcrt`.
    pub fn segwit_v0_address(&self, program: &[u8]) -> Result<String> {
        let hrp = match self.kind {
            BitcoinImpl::Bcoin => "rb",
            BitcoinImpl::BitcoinCore => "bcrt",
        };
        let hrp = bech32::Hrp::parse(hrp)?;
        Ok(bech32::segwit::encode(
            hrp,
            bech32::segwit::VERSION_0,
            program,
        )?)
    }

    /// Mines `n` blocks paying to a witness program; returns the block hashes.
    pub fn mine(&self, n: u32, program: &[u8; 20]) -> Result<Vec<String>> {
        let addr = self.segwit_v0_address(program)?;
        let hashes = self.rpc("generatetoaddress", json!([n, addr]))?;
        serde_json::from_value(hashes).context("generatetoaddress result")
    }

    pub fn block_count(&self) -> Result<u64> {
        self.rpc("getblockcount", json!([]))?
            .as_u64()
            .ok_or_else(|| anyhow!("getblockcount did not return a number"))
    }
}

/// localstripe: a stateful Stripe-compatible gateway that sends signed webhooks.
pub struct LocalStripe {
    process: NodeProcess,
    port: u16,
}

impl LocalStripe {
    /// The secret key tests use; localstripe accepts any `sk_test_…` key.
    pub const SECRET_KEY: &'static str = "sk_test_relay";

    pub fn spawn() -> Result<LocalStripe> {
        let launcher = require(
            tools_dir().join("localstripe-serve"),
            "localstripe launcher",
        )?;
        require(
            tools_dir().join("venv/bin/python"),
            "the tools/venv virtualenv",
        )?;
        let port = free_port()?;
        let mut cmd = Command::new(launcher);
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--quiet",
        ]);
        let process = NodeProcess::spawn("localstripe", cmd)?;
        let gw = LocalStripe { process, port };
        gw.process.wait_until(STARTUP_TIMEOUT, || {
            ureq::get(&format!("{}/v1/payment_intents", gw.url()))
                .set("Authorization", &basic_auth(Self::SECRET_KEY, ""))
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok()
        })?;
        Ok(gw)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A form-encoded POST to the gateway's API, as Stripe clients send them.
    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Value> {
        let resp = ureq::post(&format!("{}{path}", self.url()))
            .set("Authorization", &basic_auth(Self::SECRET_KEY, ""))
            .timeout(Duration::from_secs(30))
            .send_form(form);
        match resp {
            Ok(r) => Ok(r.into_json()?),
            Err(ureq::Error::Status(code, r)) => {
                bail!(
                    "POST {path}: HTTP {code}: {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => bail!("POST {path}: {e}"),
        }
    }
}

impl LocalStripe {
    /// Registers (or replaces) webhook endpoint `name`: every event, signed with `secret`.
    pub fn register_webhook(&self, name: &str, url: &str, secret: &str) -> Result<()> {
        let resp = ureq::post(&format!("{}/_config/webhooks/{name}", self.url()))
            .timeout(Duration::from_secs(10))
            .send_form(&[("url", url), ("secret", secret)]);
        match resp {
            Ok(_) => Ok(()),
            Err(e) => bail!("registering webhook {name}: {e}"),
        }
    }

    /// A GET on the gateway's API.
    pub fn get(&self, path: &str) -> Result<Value> {
        let resp = ureq::get(&format!("{}{path}", self.url()))
            .set("Authorization", &basic_auth(Self::SECRET_KEY, ""))
            .timeout(Duration::from_secs(30))
            .call();
        match resp {
            Ok(r) => Ok(r.into_json()?),
            Err(e) => bail!("GET {path}: {e}"),
        }
    }
}

/// Runs `forge build` in `contracts/` with the solc-js wrapper, fully offline.
pub fn forge_build(contracts_dir: &Path) -> Result<()> {
    require(tools_dir().join("solc"), "the solc-js wrapper")?;
    require(tools_dir().join("node_modules/solc"), "solc-js")?;
    let out = Command::new(forge_exe()?)
        .args(["build", "--offline", "--use"])
        .arg(tools_dir().join("solc"))
        .current_dir(contracts_dir)
        .env("FOUNDRY_DISABLE_NIGHTLY_WARNING", "1")
        .output()
        .context("running forge")?;
    if !out.status.success() {
        bail!(
            "forge build failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Everything `relay dev` and the end-to-end tests start.
pub struct Testnet {
    pub anvil: Anvil,
    pub bitcoin: BitcoinNode,
    pub stripe: LocalStripe,
}

impl Testnet {
    pub fn start() -> Result<Testnet> {
        Ok(Testnet {
            anvil: Anvil::spawn().context("starting anvil")?,
            bitcoin: BitcoinNode::spawn().context("starting the bitcoin regtest node")?,
            stripe: LocalStripe::spawn().context("starting localstripe")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc7617() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(
            basic_auth("sk_test_relay", ""),
            "Basic c2tfdGVzdF9yZWxheTo="
        );
    }
}
