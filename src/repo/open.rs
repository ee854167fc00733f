//! Creating and opening a repository: the plaintext config and its MAC, the wrapped
//! repository secret `M`, and the sub-keys derived from it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::Utc;

use crate::blocking::{block_on, Ahead, BlockingKeys, BlockingStore};
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::envelope::{self};
use crate::crypto::kdf::{self, label, HmacKey};
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::config::{Config, ConfigBody, ENVELOPE_ALGORITHM};
use crate::format::provenance::PROVENANCE_FORMAT;
use crate::format::wrapped::{context, Purpose, WrappedKeyRecord};
use crate::format::REPO_FORMAT;
use crate::id::Id;
use crate::keyservice::KeyService;
use crate::store::{FileKind, Store};

use super::{Repository, Secrets, DEFAULT_COMPRESSION, DEFAULT_PACK_SIZE};

/// Settings chosen at `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_size: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::DEFAULT,
            compression_level: DEFAULT_COMPRESSION,
            pack_size: DEFAULT_PACK_SIZE,
        }
    }
}

fn config_mac(secret: &Key32, repo: &Id, body: &ConfigBody) -> String {
    let k = kdf::derive_key(repo.as_bytes(), secret, &[label::CONFIG_MAC]);
    mac_with(&k, body)
}

/// The config MAC under `K_mac` (docs/FORMAT.md §9).
pub(super) fn mac_with(k_mac: &Key32, body: &ConfigBody) -> String {
    hex::encode(kdf::hmac_sha256(k_mac, &body.mac_input()))
}

fn derive_secrets(m: &Key32, body: &ConfigBody) -> Secrets {
    let salt = body.repository.as_bytes();
    let id_key = kdf::derive_key(salt, m, &[label::CHUNK_ID]);
    let gear = kdf::derive_key(salt, m, &[label::GEAR]);
    Secrets {
        id_key: HmacKey::new(&id_key),
        snapshot_id_key: HmacKey::new(&kdf::derive_key(salt, m, &[label::SNAPSHOT_ID])),
        chunker: Chunker::new(&gear, body.chunker),
        index_key: kdf::derive_key(salt, m, &[label::INDEX]),
        parent_cache_key: kdf::derive_key(salt, m, &[label::PARENT_CACHE]),
        config_mac_key: kdf::derive_key(salt, m, &[label::CONFIG_MAC]),
    }
}

/// `init --json`, and what `init` tells a person.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InitOutput {
    pub repository_id: Id,
    pub location: String,
    pub key_service: String,
    pub keyring_created: bool,
    /// Whether the keyring `init` created is sealed with a passphrase.
    #[serde(default)]
    pub keyring_sealed: bool,
    /// The folder of a keyring `init` created (not in the JSON document).
    #[serde(skip)]
    pub keyring_dir: Option<PathBuf>,
    /// Object Lock retention, when `init` set it (docs/FORMAT.md §21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::format::retention::RetentionRecord>,
}

impl std::fmt::Display for InitOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "created repository {} at {}",
            self.repository_id, self.location
        )?;
        write!(f, "key service: {}", self.key_service)?;
        if let Some(dir) = &self.keyring_dir {
            write!(
                f,
                "\ncreated a new local keyring in {} ({})\nkeep a copy of it somewhere safe: without it this repository cannot be read",
                dir.display(),
                if self.keyring_sealed {
                    "sealed with your passphrase"
                } else {
                    "NOT protected by a passphrase: anyone who can read it can read the repository; \
                     seal it with `custody key passwd --new-passphrase-file FILE`"
                }
            )?;
        }
        if let Some(r) = &self.object_lock {
            if r.days > 0 {
                write!(
                    f,
                    "\nObject Lock: {} for {} day(s) on every object",
                    r.mode.as_str(),
                    r.days
                )?;
            }
            write!(
                f,
                "\nconditional writes (If-None-Match): {}",
                if r.conditional_writes {
                    "honoured by this server"
                } else {
                    "IGNORED by this server: an overwrite is caught by versioning and the signed \
                     history, not refused"
                }
            )?;
        }
        Ok(())
    }
}

/// Default folder for the local keyring of a repository when no key service is given.
pub fn default_keyring_dir(config_dir: &Path, repo: &Id) -> PathBuf {
    config_dir.join("keyrings").join(repo.to_hex())
}

impl Repository {
    /// The repository once its secret is known: sub-keys derived, no session key yet.
    fn assemble(
        rt: tokio::runtime::Handle,
        store: BlockingStore,
        keys: BlockingKeys,
        config: Config,
        m: &Key32,
    ) -> Repository {
        Repository {
            secrets: derive_secrets(m, &config.body),
            rt,
            store,
            keys,
            config,
            session_keys: Mutex::new(HashMap::new()),
            unwrapping: Mutex::new(HashMap::new()),
            locks_held: Default::default(),
            trees: None,
            segments: None,
            history_cache: None,
            provenance: super::provenance::Provenance::Legacy,
            history: Default::default(),
            policy: None,
        }
    }

    /// Reads the plaintext config (no keys needed): the repository id names the default keyring.
    pub fn read_config(rt: &tokio::runtime::Handle, store: &Arc<dyn Store>) -> Result<Config> {
        let bytes = block_on(rt, store.get(FileKind::Config, &Id::default()))
            .map_err(|e| match e {
                Error::NotFound(m) => Error::NotFound(format!(
                    "repository config at {} ({m}; is this a custody repository? run `custody init`)",
                    store.location()
                )),
                e => e,
            })?;
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| Error::integrity("config", format!("not a valid config: {e}")))?;
        let b = &config.body;
        if b.format != REPO_FORMAT && b.format != PROVENANCE_FORMAT {
            return Err(Error::Unsupported(format!(
                "repository format {} (this build reads {REPO_FORMAT} and {PROVENANCE_FORMAT})",
                b.format
            )));
        }
        if b.envelope_version != envelope::VERSION || b.envelope_algorithm != ENVELOPE_ALGORITHM {
            return Err(Error::Unsupported(format!(
                "envelope {} v{} (this build uses {ENVELOPE_ALGORITHM} v{})",
                b.envelope_algorithm,
                b.envelope_version,
                envelope::VERSION
            )));
        }
        b.chunker
            .validate()
            .map_err(|e| Error::integrity("config", e))?;
        Ok(config)
    }

    /// Creates a new repository in an empty location.
    pub fn init(
        rt: tokio::runtime::Handle,
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyService>,
        repo_id: Id,
        opts: &InitOptions,
    ) -> Result<Repository> {
        opts.chunker.validate().map_err(Error::invalid)?;
        if opts.pack_size < 1024 * 1024 || opts.pack_size > 512 * 1024 * 1024 {
            return Err(Error::invalid(
                "pack size must be between 1 MiB and 512 MiB",
            ));
        }
        let store = BlockingStore::new(rt.clone(), store);
        let keys = BlockingKeys::new(rt.clone(), keys);
        store.create()?;
        let secret_id = Id::random()?;
        let ctx = context(Purpose::RepositorySecret, &repo_id, &secret_id);
        let (m, wrapped) = keys.generate_data_key(Purpose::RepositorySecret, &ctx)?;
        // A repository signs its objects when this key service can act as its owner
        // (docs/FORMAT.md §17); one that cannot (an awskms: URL without owner=) makes a
        // format-1 repository, as before.
        let signed = match keys.owner_anchor(&repo_id) {
            Ok(_) => true,
            Err(Error::KeyDenied { reason, .. }) => {
                tracing::warn!("objects will not be signed: {reason}");
                false
            }
            Err(e) => return Err(e),
        };
        let body = ConfigBody {
            format: if signed {
                PROVENANCE_FORMAT
            } else {
                REPO_FORMAT
            },
            repository: repo_id,
            created: Utc::now(),
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
            envelope_version: envelope::VERSION,
            envelope_algorithm: ENVELOPE_ALGORITHM.into(),
            secret_id,
        };
        let config = Config {
            mac: config_mac(&m, &repo_id, &body),
            secret: WrappedKeyRecord {
                format: REPO_FORMAT,
                purpose: Purpose::RepositorySecret,
                repository: repo_id,
                key_id: secret_id,
                created: body.created,
                wrapped,
                signature: None,
            },
            body,
        };
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        let mut repo = Repository::assemble(rt, store, keys, config, &m);
        // The owner record first: a config of format 2 without it reads as a deleted one.
        if signed {
            repo.create_owner()?;
        }
        repo.store
            .put(FileKind::Config, &Id::default(), Bytes::from(json))?;
        Ok(repo)
    }

    /// Opens a repository: unwraps the repository secret, verifies the config's MAC, and
    /// decides whom this client signs as and believes (docs/FORMAT.md §17.2): a writer with
    /// its `identity`, else the owner when the key service makes the owner anchor.
    pub fn open(
        rt: tokio::runtime::Handle,
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyService>,
        config: Config,
        identity: Option<crate::identity::WriterIdentity>,
    ) -> Result<Repository> {
        Repository::open_with_owner_copy(rt, store, keys, config, identity, None)
    }

    /// [`Repository::open`], keeping a key holder's copy of the `owner` record at
    /// `owner_copy`: it restores the store's record when that is deleted or replaced, and
    /// shows that a repository whose `owner` vanished was signed (docs/FORMAT.md §17.2).
    pub fn open_with_owner_copy(
        rt: tokio::runtime::Handle,
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyService>,
        config: Config,
        identity: Option<crate::identity::WriterIdentity>,
        owner_copy: Option<&Path>,
    ) -> Result<Repository> {
        Repository::open_inner(rt, store, keys, config, identity, owner_copy, false)
    }

    /// Opens a repository for restore requests (docs/FORMAT.md §19): as
    /// [`Repository::open_with_owner_copy`], except that a key service that unwraps the
    /// repository secret but cannot act as the owner (one holder of a quorum) opens it as a
    /// [`super::provenance::Provenance::Reader`] instead of being refused.
    pub fn open_for_requests(
        rt: tokio::runtime::Handle,
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyService>,
        config: Config,
        owner_copy: Option<&Path>,
    ) -> Result<Repository> {
        Repository::open_inner(rt, store, keys, config, None, owner_copy, true)
    }

    fn open_inner(
        rt: tokio::runtime::Handle,
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyService>,
        config: Config,
        identity: Option<crate::identity::WriterIdentity>,
        owner_copy: Option<&Path>,
        reader_ok: bool,
    ) -> Result<Repository> {
        let b = &config.body;
        let rec = &config.secret;
        if rec.purpose != Purpose::RepositorySecret
            || rec.repository != b.repository
            || rec.key_id != b.secret_id
        {
            return Err(Error::integrity(
                "config",
                "wrapped repository secret belongs to another repository or key",
            ));
        }
        let ctx = context(Purpose::RepositorySecret, &b.repository, &b.secret_id);
        let store = BlockingStore::new(rt.clone(), store);
        // What opening reads, asked for at once while the key service unwraps the secret: on
        // a remote bucket each would otherwise be a round trip of its own.
        let root = Id::default();
        let mut ahead = match &identity {
            Some(id) => vec![Ahead::Get(FileKind::Revocation, *id.key.id())],
            None => vec![
                Ahead::Get(FileKind::Owner, root),
                Ahead::ListAndGet(FileKind::Writer),
                Ahead::List(FileKind::Revocation),
            ],
        };
        ahead.push(Ahead::Get(FileKind::Policy, root));
        let retention = store.inner().object_lock().is_some();
        if retention {
            ahead.push(Ahead::Get(FileKind::Retention, root));
        }
        store.read_ahead(&ahead);
        let keys = BlockingKeys::new(rt.clone(), keys);
        let m = keys.decrypt(&rec.wrapped, &ctx).map_err(|e| match e {
            Error::Integrity { reason, .. } => {
                Error::integrity("config (wrapped repository secret)", reason)
            }
            e => e,
        })?;
        let mac = config_mac(&m, &b.repository, b);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            mac.as_bytes(),
            config.mac.as_bytes(),
        )) {
            return Err(Error::integrity(
                "config",
                "MAC mismatch: the config was altered",
            ));
        }
        let mut repo = Repository::assemble(rt, store, keys, config, &m);
        let opened = repo
            .load_provenance(identity, owner_copy, reader_ok)
            .and_then(|()| repo.load_key_policy(owner_copy))
            // Every write from here on asks for the repository's Object Lock retention.
            .and_then(|()| match retention {
                true => repo.load_retention().map(drop),
                false => Ok(()),
            });
        repo.store().end_read_ahead();
        opened.map(|()| repo)
    }
}
