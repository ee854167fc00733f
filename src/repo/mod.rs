//! The repository: a store plus a key service plus the config, with the operations every
//! command shares (sessions, index, blobs, snapshots). Methods are synchronous and drive the
//! async store and key service on the runtime they were given, so CPU work can run on plain
//! threads; never call them from inside that runtime's worker threads.

pub mod activity;
pub mod backup;
mod blobs;
mod cache;
pub mod check;
pub mod damage;
pub mod diff;
pub mod dump_tar;
pub mod find;
pub mod forget;
pub mod history;
mod history_cache;
pub mod in_flight;
mod index;
pub mod kek_usage;
pub mod locate;
pub mod lock;
pub(crate) mod marks;
pub mod migrate;
mod objects;
mod open;
pub mod parent_cache;
pub mod patterns;
pub mod policy;
pub mod provenance;
pub mod prune;
pub mod reach;
pub mod recorded_keys;
pub mod reencrypt;
pub(crate) mod repack;
pub mod repair;
pub mod request;
pub mod restore;
pub mod retention;
pub mod rewrap;
mod session;
pub mod snapshots;
pub mod stats;
pub mod tag;
#[cfg(test)]
mod unwrap_tests;
pub mod walk;
pub mod writers;

pub use cache::{SealedCache, MANIFESTS, SEGMENTS, TREES};
pub use index::{BlobLocation, BlobSet, Index};
pub use objects::SealedObject;
pub use open::{default_keyring_dir, InitOptions, InitOutput};
pub use session::Session;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use crate::blocking::{block_on, BlockingKeys, BlockingStore};
use crate::chunker::Chunker;
use crate::crypto::kdf::HmacKey;
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::config::Config;
use crate::format::wrapped::{context, Purpose, WrappedKeyRecord};
use crate::id::{Id, PackId, SessionId};
use crate::pack::PackKey;
use crate::store::{object_name, FileKind};

/// Trees read at once by a tree walk (restore, check, prune): bounds what a wide folder level
/// holds in memory.
pub const TREE_BATCH: usize = 256;

/// Default target pack size: 16 MiB.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
pub const DEFAULT_COMPRESSION: i32 = 3;
/// No blob is larger (chunks stop at 64 MiB; trees far below): a longer index entry is forged
/// or corrupt, and is refused before any buffer is allocated for it.
pub const MAX_BLOB: u64 = 512 << 20;
/// No pack is larger (512 MiB packs at most, plus header): bounds restore's per-pack reads.
pub const MAX_PACK: u64 = 1 << 30;

/// Sub-keys derived from the repository secret M. Writers hold these too.
struct Secrets {
    id_key: HmacKey,
    /// `K_snap`: binds new snapshot ids to their manifests.
    snapshot_id_key: HmacKey,
    chunker: Chunker,
    index_key: Key32,
    /// Seals the local parent cache (client side only).
    parent_cache_key: Key32,
    /// `K_mac`: authenticates the config body (`migrate` rewrites it).
    config_mac_key: Key32,
}

/// A key service's last answer for a session's key that was not the key (no secret in it).
struct Failure {
    /// Refused: the answer for the rest of the run. Otherwise unavailable: the answer for
    /// whoever waited on that attempt (each had the SDK's retries already), not for later asks.
    refused: bool,
    at: std::time::Instant,
    key: String,
    operation: String,
    reason: String,
}

impl Failure {
    fn error(&self) -> Error {
        let (key, operation, reason) = (
            self.key.clone(),
            self.operation.clone(),
            self.reason.clone(),
        );
        match self.refused {
            true => Error::KeyDenied {
                key,
                operation,
                reason,
            },
            false => Error::KeyUnavailable {
                key,
                operation,
                reason,
            },
        }
    }
}

pub struct Repository {
    rt: tokio::runtime::Handle,
    store: BlockingStore,
    keys: BlockingKeys,
    config: Config,
    secrets: Secrets,
    session_keys: Mutex<HashMap<SessionId, Key32>>,
    /// One unwrap per session at a time: threads reading many objects at once that need the
    /// same session key wait for the first one's answer instead of each asking the key service.
    /// A refusal is kept there: it is the answer for the rest of the command, so the key
    /// service's audit log shows one refusal per session, not one per thread that asked. An
    /// unavailable service is kept too, as the answer for the threads that waited on that
    /// attempt ([`Failure`]).
    unwrapping: Mutex<HashMap<SessionId, std::sync::Arc<Mutex<Option<Failure>>>>>,
    /// How many repository locks this value holds now (see [`lock`]): a step that must run
    /// under the lock takes it only when its caller has not.
    locks_held: std::sync::atomic::AtomicUsize,
    trees: Option<SealedCache>,
    segments: Option<SealedCache>,
    /// Snapshot manifests, for backup's and restore's reading of the history (see
    /// [`history_cache`]).
    history_cache: Option<history_cache::HistoryCache>,
    provenance: provenance::Provenance,
    history: history::HistoryOptions,
    /// The key policy in force (docs/FORMAT.md §20), verified at opening.
    policy: Option<crate::keyservice::policy::KeyPolicy>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.location())
            .field("keys", &self.keys.url())
            .field("id", &self.config.body.repository)
            .finish()
    }
}

impl Repository {
    pub fn id(&self) -> Id {
        self.config.body.repository
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store, blocking: call from plain threads only (see [`crate::blocking`]).
    pub fn store(&self) -> &BlockingStore {
        &self.store
    }

    /// The key service, blocking: call from plain threads only.
    pub fn key_service(&self) -> &BlockingKeys {
        &self.keys
    }

    pub(crate) fn parent_cache_key(&self) -> &Key32 {
        &self.secrets.parent_cache_key
    }

    pub fn chunker(&self) -> &Chunker {
        &self.secrets.chunker
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Runs a future to completion from a plain thread (never a runtime worker).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        block_on(&self.rt, f)
    }

    /// The id of a blob's plaintext (a chunk, or a tree's JSON): HMAC-SHA256 under the
    /// repository's id key. Raw, because it names a chunk or a tree depending on the caller.
    pub fn chunk_id(&self, plaintext: &[u8]) -> Id {
        Id(self.secrets.id_key.sign(plaintext))
    }

    /// The plaintext data key of a session, unwrapped once per process and cached.
    /// Reads and decodes `keys/<session>` (plain JSON: it holds only a wrapped key). Nothing in
    /// it is trusted until the key service unwraps it under the context built from the id.
    pub fn load_key_record(&self, session: &SessionId) -> Result<WrappedKeyRecord> {
        let name = object_name(FileKind::Key, session);
        let bytes = self.store.get(FileKind::Key, session)?;
        crate::format::from_json::<WrappedKeyRecord>("wrapped-key record", &bytes)
            .and_then(|r| crate::format::check_format("wrapped-key record", r.format).map(|()| r))
            .map_err(|e| Error::integrity(&name, e))
    }

    pub fn session_key(&self, session: &SessionId) -> Result<Key32> {
        if let Some(k) = self.session_keys.lock().expect("lock").get(session) {
            return Ok(k.clone());
        }
        let asked = std::time::Instant::now();
        let turn = self
            .unwrapping
            .lock()
            .expect("lock")
            .entry(*session)
            .or_default()
            .clone();
        let mut turn = turn.lock().expect("lock");
        if let Some(k) = self.session_keys.lock().expect("lock").get(session) {
            return Ok(k.clone());
        }
        // Threads of one restore ask for one session's key at once, and wait here while the
        // first asks: a refusal stands for the run, and an unavailable service for those that
        // waited on it (asking again, each after its own retries, multiplied the wait).
        if let Some(f) = turn.as_ref().filter(|f| f.refused || f.at >= asked) {
            return Err(f.error());
        }
        let name = object_name(FileKind::Key, session);
        let rec = self.load_key_record(session).map_err(|e| match e {
            Error::NotFound(_) => {
                Error::integrity(&name, "the wrapped key of this session is missing")
            }
            e => e,
        })?;
        if rec.purpose != Purpose::SessionKey
            || rec.repository != self.id()
            || rec.key_id != **session
        {
            return Err(Error::integrity(
                &name,
                format!(
                    "record belongs to {} {} of repository {} (swapped or copied key object)",
                    rec.purpose.as_str(),
                    rec.key_id.short(),
                    rec.repository.short()
                ),
            ));
        }
        // The context is built from what we asked for, never from the record.
        let ctx = context(Purpose::SessionKey, &self.id(), session);
        // A refusal of a record nobody accepted signed (say, one naming a KEK of another
        // service) is a forgery to report, not a reason to stop: untrusted, so `check` names
        // it and goes on. The signature is not required before unwrapping: it covers
        // `created`, which an edit would break without touching the wrapped key.
        let signed_by_known = |rec: &WrappedKeyRecord| match self.roster() {
            Some(r) => rec
                .signer()
                .is_some_and(|s| s == r.owner || r.enrolled.contains_key(&s)),
            None => true,
        };
        self.check_policy(&rec.wrapped)?;
        let k = self.keys.decrypt(&rec.wrapped, &ctx).map_err(|e| match e {
            Error::Integrity { reason, .. } => Error::integrity(&name, reason),
            Error::KeyDenied { reason, .. } if !signed_by_known(&rec) => Error::untrusted(
                &name,
                format!("not signed by the owner or an enrolled writer, and the key service refused it ({reason})"),
            ),
            e => e,
        });
        let (refused, key, operation, reason) = match k {
            Ok(k) => {
                self.session_keys
                    .lock()
                    .expect("lock")
                    .insert(*session, k.clone());
                return Ok(k);
            }
            Err(Error::KeyDenied {
                key,
                operation,
                reason,
            }) => (true, key, operation, reason),
            Err(Error::KeyUnavailable {
                key,
                operation,
                reason,
            }) => (false, key, operation, reason),
            Err(e) => return Err(e),
        };
        let failure = Failure {
            refused,
            at: std::time::Instant::now(),
            key,
            operation,
            reason,
        };
        let e = failure.error();
        *turn = Some(failure);
        Err(e)
    }

    pub fn pack_key(&self, session: &SessionId, pack: &PackId) -> Result<PackKey> {
        let dek = self.session_key(session)?;
        Ok(PackKey::new(&self.id(), session, &dek, *pack))
    }
}
