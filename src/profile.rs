//! Profiles (`$CUSTODY_CONFIG_DIR/config.toml`, by default `~/.config/custody/config.toml`):
//! the repository, key service and the rest that would otherwise be repeated on every
//! command. Top-level settings apply always; `[profile.NAME]` adds to and overrides them
//! when `--profile NAME` (or `CUSTODY_PROFILE`) picks it. A flag or environment variable
//! given for a run wins over both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{Cli, Command};

/// One set of settings (the top level, or one profile).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub repository: Option<String>,
    pub key_service: Option<String>,
    pub passphrase_file: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub witness: Option<String>,
    pub audit_log: Option<PathBuf>,
    /// Backup: patterns left out, added to those given on the command line.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exclude_file: Vec<PathBuf>,
    #[serde(default)]
    pub exclude_caches: Option<bool>,
    #[serde(default)]
    pub one_file_system: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(flatten)]
    top: Settings,
    #[serde(default)]
    profile: BTreeMap<String, Settings>,
}

impl Settings {
    /// `over`'s values where it has them, else ours; lists are joined.
    fn overlay(mut self, over: Settings) -> Settings {
        self.repository = over.repository.or(self.repository);
        self.key_service = over.key_service.or(self.key_service);
        self.passphrase_file = over.passphrase_file.or(self.passphrase_file);
        self.identity = over.identity.or(self.identity);
        self.witness = over.witness.or(self.witness);
        self.audit_log = over.audit_log.or(self.audit_log);
        self.exclude.extend(over.exclude);
        self.exclude_file.extend(over.exclude_file);
        self.exclude_caches = over.exclude_caches.or(self.exclude_caches);
        self.one_file_system = over.one_file_system.or(self.one_file_system);
        self
    }
}

/// The config file in `config_dir`.
pub fn path(config_dir: &Path) -> PathBuf {
    config_dir.join("config.toml")
}

/// The settings for this run: the file's top level and the chosen profile. No file and no
/// profile asked for is no settings; a profile asked for must exist.
pub fn load(config_dir: &Path, profile: Option<&str>) -> Result<Settings, String> {
    let path = path(config_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match profile {
                None => Ok(Settings::default()),
                Some(p) => Err(format!(
                    "profile {p:?} asked for, but there is no {}",
                    path.display()
                )),
            }
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(name) = profile else {
        return Ok(file.top);
    };
    let chosen = file.profile.remove(name).ok_or_else(|| {
        let known: Vec<&str> = file.profile.keys().map(String::as_str).collect();
        format!(
            "no profile {name:?} in {} (it has: {})",
            path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    })?;
    Ok(file.top.overlay(chosen))
}

/// Fills what the command line and environment left unset.
pub fn apply(cli: &mut Cli, s: Settings) {
    cli.repo = cli.repo.take().or(s.repository);
    cli.key_service = cli.key_service.take().or(s.key_service);
    cli.passphrase_file = cli.passphrase_file.take().or(s.passphrase_file);
    cli.identity = cli.identity.take().or(s.identity);
    cli.witness = cli.witness.take().or(s.witness);
    cli.audit_log = cli.audit_log.take().or(s.audit_log);
    if let Command::Backup(b) = &mut cli.command {
        b.exclude.extend(s.exclude);
        b.exclude_file.extend(s.exclude_file);
        b.exclude_caches |= s.exclude_caches.unwrap_or(false);
        b.one_file_system |= s.one_file_system.unwrap_or(false);
    }
}
