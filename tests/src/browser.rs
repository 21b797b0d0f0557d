//! Chromium over WebDriver, for the checkout page's tests: Debian's `chromedriver` (installed with
//! `chromium` by `scripts/setup.sh`) on a free loopback port, killed on Drop. Fails loudly, saying
//! what to install, when either is missing.

use crate::process::{free_port, NodeProcess};
use crate::STARTUP_TIMEOUT;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

/// The first `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

/// The Chromium browser itself (Debian's `/usr/bin/chromium` is a wrapper script around it).
fn chromium_binary() -> Result<PathBuf> {
    let real = PathBuf::from("/usr/lib/chromium/chromium");
    if real.is_file() {
        return Ok(real);
    }
    on_path("chromium").ok_or_else(|| {
        anyhow::anyhow!(
            "chromium not found: run scripts/setup.sh (it installs Debian's chromium and chromium-driver)"
        )
    })
}

/// A running chromedriver.
pub struct ChromeDriver {
    _process: NodeProcess,
    port: u16,
    browser: PathBuf,
}

impl ChromeDriver {
    pub fn spawn() -> Result<ChromeDriver> {
        let Some(exe) = on_path("chromedriver") else {
            bail!("chromedriver not found: run scripts/setup.sh (it installs Debian's chromium-driver)");
        };
        let browser = chromium_binary()?;
        let port = free_port()?;
        let mut cmd = Command::new(exe);
        cmd.arg(format!("--port={port}"));
        let process = NodeProcess::spawn("chromedriver", cmd)?;
        process.wait_until(STARTUP_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(ChromeDriver {
            _process: process,
            port,
            browser,
        })
    }

    /// Where WebDriver clients connect.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Capabilities of a headless Chromium whose page is `width` × `height` CSS pixels and which
    /// asks for pages in `lang` (`Accept-Language`).
    pub fn capabilities(
        &self,
        width: u32,
        height: u32,
        lang: &str,
    ) -> serde_json::Map<String, Value> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.browser,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--lang={lang}"),
                ],
                "prefs": {"intl.accept_languages": lang},
                // The page's own size, whatever the smallest window the platform allows.
                "mobileEmulation": {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}},
            }),
        );
        caps
    }
}
