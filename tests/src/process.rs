//! A child process that is killed when its handle is dropped, with its output kept in a scratch
//! directory so a failure to start can say why.

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

pub struct NodeProcess {
    name: &'static str,
    child: Child,
    scratch: tempfile::TempDir,
}

impl NodeProcess {
    pub fn spawn(name: &'static str, cmd: Command) -> Result<NodeProcess> {
        Self::spawn_with_dir(name, cmd, tempfile::tempdir()?)
    }

    pub fn spawn_with_dir(
        name: &'static str,
        mut cmd: Command,
        scratch: tempfile::TempDir,
    ) -> Result<NodeProcess> {
        let log = std::fs::File::create(scratch.path().join("output.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(NodeProcess {
            name,
            child,
            scratch,
        })
    }

    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The last lines the process printed.
    pub fn output_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.scratch.path().join("output.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Polls `ready` until it is true, failing early if the process exits.
    pub fn wait_until(&self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            // try_wait needs &mut; reading /proc keeps this method shared.
            if !Path::new(&format!("/proc/{}", self.child.id())).exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                    .map(|s| s.split_whitespace().nth(2) == Some("Z"))
                    .unwrap_or(true)
            {
                bail!(
                    "{} exited during startup:\n{}",
                    self.name,
                    self.output_tail()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not answer within {:?}:\n{}",
                    self.name,
                    timeout,
                    self.output_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
