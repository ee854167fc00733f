//! The quorum file (docs/FORMAT.md §11.4): written by hand, completed by `key create`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Part;
use crate::error::{Error, Result};

/// The quorum file, as written by hand and completed by `key create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumFile {
    /// `1`.
    pub format: u32,
    /// How many holders must take part (M).
    pub threshold: u8,
    /// The N holders: a name each (as records and messages show it) and a key-service URL.
    pub holders: Vec<HolderEntry>,
    /// The owner anchor's parts (made by `key create`); absent in a writer's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Vec<Part>>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderEntry {
    pub name: String,
    pub key_service: String,
}

impl std::fmt::Debug for HolderEntry {
    // A pkcs11: URL may carry a PIN: only its scheme is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.key_service.split(':').next().unwrap_or("");
        f.debug_struct("HolderEntry")
            .field("name", &self.name)
            .field("key_service", &format_args!("{scheme}:<redacted>"))
            .finish()
    }
}

/// A quorum file named `*.toml` is TOML; any other is JSON.
fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

impl QuorumFile {
    pub fn read(path: &Path) -> Result<QuorumFile> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
        let bad = |e: &dyn std::fmt::Display| {
            Error::invalid(format!("quorum file {}: {e}", path.display()))
        };
        let f: QuorumFile = if is_toml(path) {
            let text = std::str::from_utf8(&bytes).map_err(|e| bad(&e))?;
            toml::from_str(text).map_err(|e| bad(&e))?
        } else {
            serde_json::from_slice(&bytes).map_err(|e| bad(&e))?
        };
        let n = f.holders.len();
        if f.format != 1 {
            return Err(Error::invalid(format!(
                "quorum file {}: format {} (this version reads 1)",
                path.display(),
                f.format
            )));
        }
        if f.threshold < 2 || usize::from(f.threshold) > n || n > 255 {
            return Err(Error::invalid(format!(
                "quorum file {}: threshold {} of {n} holders (needs 2 <= M <= N <= 255)",
                path.display(),
                f.threshold
            )));
        }
        let mut names: Vec<&str> = f.holders.iter().map(|h| h.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) || names.iter().any(|n| n.is_empty()) {
            return Err(Error::invalid(format!(
                "quorum file {}: holder names must be distinct and not empty",
                path.display()
            )));
        }
        Ok(f)
    }

    /// Writes the file back in its own format (TOML for a `.toml` file, JSON otherwise).
    pub(super) fn write(&self, path: &Path) -> Result<()> {
        let bytes = if is_toml(path) {
            toml::to_string_pretty(self)
                .map_err(|e| Error::Internal(format!("quorum file as TOML: {e}")))?
                .into_bytes()
        } else {
            let mut b = serde_json::to_vec_pretty(self).expect("quorum file serializes");
            b.push(b'\n');
            b
        };
        std::fs::write(path, bytes).map_err(|e| Error::io(path.display(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::HolderEntry;

    #[test]
    fn holder_urls_never_reach_debug_output() {
        let h = HolderEntry {
            name: "carol".into(),
            key_service: "pkcs11:token=t;object=o?pin-value=4321".into(),
        };
        let shown = format!("{h:?}");
        assert!(shown.contains("carol") && shown.contains("pkcs11:") && !shown.contains("4321"));
    }
}
