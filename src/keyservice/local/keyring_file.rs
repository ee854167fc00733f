//! `keyring.json` (docs/FORMAT.md §11.1): its JSON structure, and how a [`LocalKeyring`] is
//! written to it and read back. The file holds the KEKs themselves, so it is written once
//! (`create_new`, mode 0600, fsynced, in a folder made 0700) and refused on reading when group
//! or others may read it. Sealing the secrets is [`passphrase`]'s part.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{denied, passphrase, symmetric_wrap, x25519_wrap, Kek, LocalKeyring};
use crate::crypto::Key32;
use crate::error::{Error, Result};

const FILE: &str = "keyring.json";
/// The only `format` this build reads and writes.
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyringRole {
    /// Holds every secret: backs up, restores, rotates.
    Owner,
    /// Holds the meta KEK and only the public half of the data KEK: backs up, cannot read.
    Writer,
}

/// Present only in a sealed keyring: how the passphrase becomes the sealing key.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Argon2Params {
    pub(crate) m_cost_kib: u32,
    pub(crate) t_cost: u32,
    pub(crate) p_cost: u32,
    #[serde(with = "b64")]
    pub(crate) salt: Vec<u8>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SecretField {
    /// Base64 of the raw 32 bytes.
    Plain(#[serde(with = "b64")] Vec<u8>),
    /// nonce || AES-256-GCM(ciphertext || tag) under the passphrase key, AAD = KEK id.
    Sealed(#[serde(with = "b64")] Vec<u8>),
}

/// What a keyring entry's KEK wraps. A reader takes the first `meta` and the first `data`
/// entry; an entry with any other purpose is passed over, as when this was a string, so such a
/// file still opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EntryPurpose {
    /// The meta KEK: wraps the repository secret.
    Meta,
    /// The data KEK: wraps session keys.
    Data,
    /// Any other string: read and ignored, never written.
    #[serde(other, skip_serializing)]
    Other,
}

impl std::fmt::Display for EntryPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryPurpose::Meta => "meta",
            EntryPurpose::Data => "data",
            EntryPurpose::Other => "other",
        })
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct KekEntry {
    id: String,
    purpose: EntryPurpose,
    algorithm: String,
    created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    public: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<SecretField>,
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyringFile {
    format: u32,
    role: KeyringRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    passphrase: Option<Argon2Params>,
    keks: Vec<KekEntry>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Whether the keyring in `dir`, or the writer identity file `dir` names, is sealed with a
/// passphrase (so that a person at a terminal may be asked for it). False when it cannot be
/// read: opening it then says why.
pub fn is_sealed(dir: &Path) -> bool {
    let file = if dir.is_dir() {
        path(dir)
    } else {
        dir.to_path_buf()
    };
    #[derive(serde::Deserialize)]
    struct Sealing {
        #[serde(default)]
        passphrase: Option<serde::de::IgnoredAny>,
    }
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Sealing>(&b).ok())
        .is_some_and(|s| s.passphrase.is_some())
}

/// Refuses a folder that already holds a keyring: one is never overwritten. Checked before
/// any slow work (argon2id), and again by `create_new` when writing.
fn refuse_existing(dir: &Path) -> Result<()> {
    let path = path(dir);
    if path.exists() {
        return Err(Error::AlreadyExists(format!("keyring {}", path.display())));
    }
    Ok(())
}

/// Writes `file` to `dir` (made 0700 if missing) as a new file, mode 0600, fsynced.
fn write_new(dir: &Path, file: &KeyringFile) -> Result<()> {
    let path = path(dir);
    // Only `EntryPurpose::Other`, which is never written, could fail to serialize.
    let json = Zeroizing::new(
        serde_json::to_vec_pretty(file)
            .map_err(|e| Error::invalid(format!("keyring does not serialize: {e}")))?,
    );
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir.display(), e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(path.display(), e))?;
    f.write_all(&json)
        .map_err(|e| Error::io(path.display(), e))?;
    f.sync_all().map_err(|e| Error::io(path.display(), e))?;
    Ok(())
}

/// Reads the keyring in `dir`, refusing a file others can read and any format but this
/// build's. `url` names the key service in errors.
fn read(dir: &Path, url: &str) -> Result<KeyringFile> {
    let path = path(dir);
    let meta = std::fs::metadata(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::KeyUnavailable {
                key: url.to_string(),
                operation: "open keyring".into(),
                reason: format!("no keyring at {}", path.display()),
            }
        } else {
            Error::io(path.display(), e)
        }
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(denied(
            url,
            "open keyring",
            format!(
                "{} is readable by group or others (mode {mode:o}); run chmod 600 on it",
                path.display()
            ),
        ));
    }
    let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| Error::io(path.display(), e))?);
    let file: KeyringFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("{}: not a custody keyring: {e}", path.display())))?;
    if file.format != FORMAT {
        return Err(Error::Unsupported(format!(
            "keyring format {} (this build reads {FORMAT})",
            file.format
        )));
    }
    Ok(file)
}

impl LocalKeyring {
    pub fn file_path(dir: &Path) -> PathBuf {
        path(dir)
    }

    /// Writes this keyring (or its writer subset) to `dir`; fails if a keyring is there.
    pub fn write_to(
        &self,
        dir: &Path,
        role: KeyringRole,
        passphrase: Option<&SecretString>,
    ) -> Result<()> {
        refuse_existing(dir)?;
        let data_secret = match role {
            KeyringRole::Owner => Some(self.data.secret.as_ref().ok_or_else(|| {
                denied(
                    &self.data_ref(),
                    "export",
                    "this keyring holds no data KEK secret to export",
                )
            })?),
            KeyringRole::Writer => None,
        };
        let meta_secret = self.meta.secret.as_ref().ok_or_else(|| {
            denied(
                &self.meta_ref(),
                "export",
                "this keyring holds no meta KEK secret",
            )
        })?;
        let (params, pkey) = match passphrase {
            Some(p) => {
                let params = passphrase::new_params()?;
                let k = passphrase::derive_key(&params, p)?;
                (Some(params), Some(k))
            }
            None => (None, None),
        };
        let field = |id: &str, s: &Key32| -> Result<SecretField> {
            Ok(match &pkey {
                Some(k) => SecretField::Sealed(passphrase::seal(k, id, s)?),
                None => SecretField::Plain(s.expose().to_vec()),
            })
        };
        let file = KeyringFile {
            format: FORMAT,
            role,
            passphrase: params,
            keks: vec![
                KekEntry {
                    id: self.meta.id.clone(),
                    purpose: EntryPurpose::Meta,
                    algorithm: symmetric_wrap::ALGORITHM.into(),
                    created: self.meta.created,
                    public: None,
                    secret: Some(field(&self.meta.id, meta_secret)?),
                },
                KekEntry {
                    id: self.data.id.clone(),
                    purpose: EntryPurpose::Data,
                    algorithm: x25519_wrap::ALGORITHM.into(),
                    created: self.data.created,
                    public: Some(self.data_public.to_vec()),
                    secret: data_secret.map(|s| field(&self.data.id, s)).transpose()?,
                },
            ],
        };
        write_new(dir, &file)
    }

    /// `key passwd`: the keyring in `dir`, opened with `old`, written again sealed with `new`
    /// (or unsealed with `None`): first beside it, then renamed over it, so an interruption
    /// leaves the old file or the new one, never neither.
    pub fn change_passphrase(
        dir: &Path,
        old: Option<&SecretString>,
        new: Option<&SecretString>,
    ) -> Result<()> {
        let keyring = LocalKeyring::open(dir, old)?;
        let staging = dir.join(".keyring-passwd");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| Error::io(staging.display(), e))?;
        }
        keyring.write_to(&staging, keyring.role(), new)?;
        let (from, to) = (path(&staging), path(dir));
        std::fs::rename(&from, &to).map_err(|e| Error::io(to.display(), e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir.display(), e))?;
        std::fs::remove_dir(&staging).map_err(|e| Error::io(staging.display(), e))?;
        Ok(())
    }

    /// Opens the keyring in `dir`, refusing files others can read.
    pub fn open(dir: &Path, passphrase: Option<&SecretString>) -> Result<LocalKeyring> {
        let url = format!("local:{}", dir.display());
        let file = read(dir, &url)?;
        let pkey = match (&file.passphrase, passphrase) {
            (Some(p), Some(pass)) => Some(passphrase::derive_key(p, pass)?),
            (Some(_), None) => {
                return Err(denied(
                    &url,
                    "open keyring",
                    "the keyring is sealed with a passphrase: set CUSTODY_KEYRING_PASSPHRASE, use --passphrase-file, or run on a terminal to be asked",
                ))
            }
            (None, _) => None,
        };
        let load = |purpose: EntryPurpose| -> Result<(Kek, Option<[u8; 32]>)> {
            let e = file
                .keks
                .iter()
                .find(|k| k.purpose == purpose)
                .ok_or_else(|| Error::invalid(format!("keyring has no {purpose} KEK")))?;
            let secret = match &e.secret {
                None => None,
                Some(SecretField::Plain(b)) => Some(
                    Key32::from_slice(b)
                        .ok_or_else(|| Error::invalid("keyring secret is not 32 bytes"))?,
                ),
                Some(SecretField::Sealed(b)) => {
                    let k = pkey.as_ref().ok_or_else(|| {
                        denied(&url, "open keyring", "sealed secret in an unsealed keyring")
                    })?;
                    Some(passphrase::unseal(k, &e.id, b, &url)?)
                }
            };
            let public = match &e.public {
                Some(p) => Some(
                    <[u8; 32]>::try_from(p.as_slice())
                        .map_err(|_| Error::invalid("keyring public key is not 32 bytes"))?,
                ),
                None => None,
            };
            let kek = Kek {
                id: e.id.clone(),
                created: e.created,
                secret,
            };
            Ok((kek, public))
        };
        // The meta entry's `public`, if any, is checked for its length and not used.
        let (meta, _) = load(EntryPurpose::Meta)?;
        let (data, data_public) = load(EntryPurpose::Data)?;
        let data_public =
            data_public.ok_or_else(|| Error::invalid("keyring data KEK has no public key"))?;
        Ok(LocalKeyring {
            dir: dir.to_path_buf(),
            role: file.role,
            meta,
            data,
            data_public,
            sealed: file.passphrase.is_some(),
        })
    }
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

mod opt_b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(
        v: &Option<Vec<u8>>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&B64.encode(v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| B64.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_group_readable_file_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let pass = SecretString::from("correct horse".to_string());
        LocalKeyring::create(dir.path(), Some(&pass)).unwrap();
        let path = LocalKeyring::file_path(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("sealed"));
        assert!(LocalKeyring::open(dir.path(), Some(&pass)).is_ok());
        let wrong = SecretString::from("wrong".to_string());
        let e = LocalKeyring::open(dir.path(), Some(&wrong)).unwrap_err();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        assert!(LocalKeyring::open(dir.path(), None)
            .unwrap_err()
            .is_key_service());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = LocalKeyring::open(dir.path(), Some(&pass)).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn purposes_are_written_as_strings_and_unknown_ones_are_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let k = LocalKeyring::create(dir.path(), None).unwrap();
        let path = LocalKeyring::file_path(dir.path());
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["keks"][0]["purpose"], "meta");
        assert_eq!(v["keks"][1]["purpose"], "data");
        // An entry of a purpose this build does not know, placed first, is passed over.
        let mut other = v["keks"][1].clone();
        other["purpose"] = "archive".into();
        other["id"] = "00".repeat(16).into();
        v["keks"].as_array_mut().unwrap().insert(0, other);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let back = LocalKeyring::open(dir.path(), None).unwrap();
        assert_eq!(
            (back.meta_ref(), back.data_ref()),
            (k.meta_ref(), k.data_ref())
        );
    }
}
