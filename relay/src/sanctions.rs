//! Sanctions lists from files, in the format of the OFAC SDN digital currency address lists: a
//! folder with one file per asset (`sanctioned_addresses_ETH.txt`, `sanctioned_addresses_XBT.txt`;
//! any other `NAME.txt` is the list of asset `NAME`), one address per line. Loaded at start and
//! again whenever a file changes, appears or goes (looked at every `sanctions_reload_secs`).

use anyhow::{Context, Result};
use relay_core::Sanctions;
use relay_engine::risk::RiskScreen;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What the folder held when it was read: each list's name, size and time of change.
type Stamp = Vec<(String, u64, Option<SystemTime>)>;

fn stamp(dir: &Path) -> Result<Stamp> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".txt") {
            continue;
        }
        let meta = entry.metadata()?;
        out.push((name, meta.len(), meta.modified().ok()));
    }
    out.sort();
    Ok(out)
}

/// The asset a list file is for.
fn asset_of(name: &str) -> String {
    let stem = name.trim_end_matches(".txt");
    stem.strip_prefix("sanctioned_addresses_")
        .unwrap_or(stem)
        .to_ascii_uppercase()
}

/// Reads every list in `dir`.
pub fn load(dir: &Path) -> Result<(Sanctions, Stamp)> {
    let before = stamp(dir)?;
    let mut lists = Sanctions::default();
    for (name, ..) in &before {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        lists.add_list(&asset_of(name), &text);
    }
    Ok((lists, before))
}

/// Loads the lists into `screen` now (an error if the folder cannot be read), then keeps them
/// current in the background.
pub fn start(
    screen: Arc<RiskScreen>,
    dir: &Path,
    every: Duration,
) -> Result<tokio::task::JoinHandle<()>> {
    let (lists, mut seen) = load(dir)?;
    log_loaded(&lists);
    screen.set_sanctions(lists);
    let dir = dir.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match stamp(&dir) {
                Ok(now) if now == seen => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "relay::risk", error = %e, "cannot read the sanctions lists; keeping the ones loaded");
                    continue;
                }
            }
            match load(&dir) {
                Ok((lists, now)) => {
                    log_loaded(&lists);
                    screen.set_sanctions(lists);
                    seen = now;
                }
                Err(e) => {
                    tracing::warn!(target: "relay::risk", error = %e, "cannot reload the sanctions lists; keeping the ones loaded")
                }
            }
        }
    }))
}

fn log_loaded(lists: &Sanctions) {
    for (asset, n) in lists.sizes() {
        metrics::gauge!("relay_sanctions_list_addresses", "asset" => asset.clone()).set(n as f64);
        tracing::info!(target: "relay::risk", %asset, addresses = n, "sanctions list loaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_read_per_asset_and_their_changes_seen() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sanctioned_addresses_ETH.txt"),
            "0x8576acc5c05d6ce88f4e49bf65bdf0c62f91353c\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.md"), "not a list").unwrap();
        let (lists, first) = load(dir.path()).unwrap();
        assert_eq!(lists.sizes(), vec![("ETH".to_owned(), 1)]);
        assert_eq!(
            lists.hit("0x8576ACC5C05D6CE88F4E49BF65BDF0C62F91353C"),
            Some("ETH")
        );
        std::fs::write(dir.path().join("XBT.txt"), "bc1qexample\nbc1qother\n").unwrap();
        assert_ne!(stamp(dir.path()).unwrap(), first, "a new list is a change");
        let (lists, _) = load(dir.path()).unwrap();
        assert_eq!(lists.sizes().len(), 2);
        assert!(load(&dir.path().join("missing")).is_err());
    }
}
