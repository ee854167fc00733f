//! A writer's identity file (docs/FORMAT.md §17.3): the writer's Ed25519 signing key and the
//! owner's public key, as `key export --role writer` wrote them for one repository. It lives
//! on the backup host beside the writer's keyring (`identity.json` in a `local:` keyring
//! folder) or where `--identity` / `CUSTODY_IDENTITY` points. Like a keyring it is written
//! once, mode 0600, and refused when others may read it; with a passphrase its seed is sealed
//! the same way a keyring's secrets are.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::crypto::signing::SigningKey;
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::id::{Id, SignerId};
use crate::keyservice::local::keyring_file::Argon2Params;
use crate::keyservice::local::passphrase;

/// The file name of an identity inside a keyring folder.
pub const FILE: &str = "identity.json";
const FORMAT: u32 = 1;
/// The AAD of a sealed seed (the keyring seals each secret under its KEK id).
const SEAL_LABEL: &str = "writer-identity";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Seed {
    Plain(#[serde(with = "crate::format::wrapped::b64")] Vec<u8>),
    Sealed(#[serde(with = "crate::format::wrapped::b64")] Vec<u8>),
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    format: u32,
    repository: Id,
    writer: SignerId,
    name: String,
    owner: SignerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    passphrase: Option<Argon2Params>,
    seed: Seed,
}

/// An opened identity: the signing key is in memory (zeroized on drop).
#[derive(Debug)]
pub struct WriterIdentity {
    pub repository: Id,
    pub name: String,
    /// The owner's public key: the only other signer this writer trusts.
    pub owner: SignerId,
    pub key: SigningKey,
}

impl WriterIdentity {
    /// The identity file of a `local:` keyring folder.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Writes a new identity file (never over an existing one).
    pub fn write(&self, path: &Path, pass: Option<&SecretString>) -> Result<()> {
        let (params, seed) = match pass {
            Some(p) => {
                let params = passphrase::new_params()?;
                let k = passphrase::derive_key(&params, p)?;
                let sealed = passphrase::seal(&k, SEAL_LABEL, self.key.seed())?;
                (Some(params), Seed::Sealed(sealed))
            }
            None => (None, Seed::Plain(self.key.seed().expose().to_vec())),
        };
        let file = IdentityFile {
            format: FORMAT,
            repository: self.repository,
            writer: self.key.id(),
            name: self.name.clone(),
            owner: self.owner,
            passphrase: params,
            seed,
        };
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(&file).map_err(|e| Error::Internal(e.to_string()))?,
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    Error::AlreadyExists(format!("writer identity {}", path.display()))
                }
                _ => Error::io(path.display(), e),
            })?;
        f.write_all(&json)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(path.display(), e))
    }

    /// Reads an identity file; `pass` opens a sealed one.
    pub fn open(path: &Path, pass: Option<&SecretString>) -> Result<WriterIdentity> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path.display(), e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "writer identity {} may be read by others (chmod 600 it)",
                path.display()
            )));
        }
        let bytes =
            zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| Error::io(path.display(), e))?);
        let bad =
            |why: String| Error::invalid(format!("writer identity {}: {why}", path.display()));
        let file: IdentityFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if file.format != FORMAT {
            return Err(Error::Unsupported(format!(
                "writer identity format {} (this build reads {FORMAT})",
                file.format
            )));
        }
        let seed =
            match (&file.seed, &file.passphrase, pass) {
                (Seed::Plain(b), _, _) => {
                    Key32::from_slice(b).ok_or_else(|| bad("seed length".into()))?
                }
                (Seed::Sealed(b), Some(params), Some(p)) => {
                    let k = passphrase::derive_key(params, p)?;
                    passphrase::unseal(&k, SEAL_LABEL, b, &path.display().to_string())?
                }
                (Seed::Sealed(_), _, _) => return Err(bad(
                    "sealed with a passphrase: set CUSTODY_KEYRING_PASSPHRASE, use --passphrase-file, or run on a terminal to be asked"
                        .into(),
                )),
            };
        let key = SigningKey::from_seed(seed)?;
        if key.id() != file.writer {
            return Err(bad("its seed does not match its public key".into()));
        }
        Ok(WriterIdentity {
            repository: file.repository,
            name: file.name,
            owner: file.owner,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_reads_back_sealed_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let owner = SigningKey::generate().unwrap().id();
        for pass in [None, Some(SecretString::from("pw".to_string()))] {
            let id = WriterIdentity {
                repository: Id([3; 32]),
                name: "host".into(),
                owner,
                key: SigningKey::generate().unwrap(),
            };
            let path = dir.path().join(format!("{}.json", pass.is_some()));
            id.write(&path, pass.as_ref()).unwrap();
            assert!(id.write(&path, pass.as_ref()).is_err(), "never overwritten");
            let back = WriterIdentity::open(&path, pass.as_ref()).unwrap();
            assert_eq!((back.key.id(), back.owner), (id.key.id(), owner));
            if pass.is_some() {
                assert!(WriterIdentity::open(&path, None).is_err());
                let wrong = SecretString::from("no".to_string());
                assert!(WriterIdentity::open(&path, Some(&wrong)).is_err());
            }
        }
    }
}
