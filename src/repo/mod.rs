//! The repository: a store plus a key service plus the config, with the operations every
//! command shares (sessions, index, blobs, snapshots). Methods are synchronous and drive the
//! async store and key service on the runtime they were given, so CPU work can run on plain
//! threads; never call them from inside that runtime's worker threads.

pub mod activity;
pub mod backup;
mod cache;
pub mod check;
pub mod forget;
mod index;
pub mod lock;
pub mod marks;
pub mod parent_cache;
pub mod prune;
pub mod reencrypt;
pub mod repack;
pub mod restore;
pub mod rewrap;
mod session;
pub mod snapshots;

pub use cache::TreeCache;
pub use index::{BlobLocation, Index};
pub use session::Session;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::Utc;

use crate::blocking::{block_on, BlockingKeys, BlockingStore};
use crate::chunker::{Chunker, ChunkerParams};
use crate::compress;
use crate::crypto::envelope::{self, Binding, ObjectKind};
use crate::crypto::kdf::{self, label, HmacKey};
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::config::{Config, ConfigBody, ENVELOPE_ALGORITHM};
use crate::format::tree::Tree;
use crate::format::wrapped::{context, Purpose, WrappedKeyRecord};
use crate::format::REPO_FORMAT;
use crate::id::Id;
use crate::keyservice::KeyService;
use crate::pack::{BlobType, PackKey};
use crate::store::{object_name, FileKind, Store};

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
    chunker: Chunker,
    index_key: Key32,
    /// Seals the local parent cache (client side only).
    parent_cache_key: Key32,
}

pub struct Repository {
    rt: tokio::runtime::Handle,
    store: BlockingStore,
    keys: BlockingKeys,
    config: Config,
    secrets: Secrets,
    session_keys: Mutex<HashMap<Id, Key32>>,
    trees: Option<TreeCache>,
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
    hex::encode(kdf::hmac_sha256(&k, &body.mac_input()))
}

fn derive_secrets(m: &Key32, body: &ConfigBody) -> Secrets {
    let salt = body.repository.as_bytes();
    let id_key = kdf::derive_key(salt, m, &[label::CHUNK_ID]);
    let gear = kdf::derive_key(salt, m, &[label::GEAR]);
    Secrets {
        id_key: HmacKey::new(&id_key),
        chunker: Chunker::new(&gear, body.chunker),
        index_key: kdf::derive_key(salt, m, &[label::INDEX]),
        parent_cache_key: kdf::derive_key(salt, m, &[label::PARENT_CACHE]),
    }
}

/// The envelope kind of objects sealed under the index key.
fn meta_kind(kind: FileKind) -> ObjectKind {
    match kind {
        FileKind::Garbage => ObjectKind::Garbage,
        FileKind::Lock => ObjectKind::Lock,
        _ => ObjectKind::Index,
    }
}

/// Default folder for the local keyring of a repository when no key service is given.
pub fn default_keyring_dir(config_dir: &Path, repo: &Id) -> PathBuf {
    config_dir.join("keyrings").join(repo.to_hex())
}

impl Repository {
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
        if b.format != REPO_FORMAT {
            return Err(Error::Unsupported(format!(
                "repository format {} (this build reads {REPO_FORMAT})",
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
        let body = ConfigBody {
            format: REPO_FORMAT,
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
            },
            body,
        };
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        store.put(FileKind::Config, &Id::default(), Bytes::from(json))?;
        Ok(Repository {
            secrets: derive_secrets(&m, &config.body),
            rt,
            store,
            keys,
            config,
            session_keys: Mutex::new(HashMap::new()),
            trees: None,
        })
    }

    /// Opens a repository: unwraps the repository secret and verifies the config's MAC.
    pub fn open(
        rt: tokio::runtime::Handle,
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyService>,
        config: Config,
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
        Ok(Repository {
            secrets: derive_secrets(&m, b),
            rt,
            store,
            keys,
            config,
            session_keys: Mutex::new(HashMap::new()),
            trees: None,
        })
    }

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

    /// Chunk id: HMAC-SHA256 of the plaintext under the repository's id key.
    pub fn chunk_id(&self, plaintext: &[u8]) -> Id {
        Id(self.secrets.id_key.sign(plaintext))
    }

    /// Binding of an object sealed under the index key (index segments, garbage marks, locks).
    fn meta_binding<'a>(&'a self, kind: ObjectKind, object: &'a Id, zero: &'a Id) -> Binding<'a> {
        Binding {
            repo: &self.config.body.repository,
            kind,
            container: zero,
            object,
            key_id: &self.config.body.secret_id,
        }
    }

    /// Seals `plain` under the index key and stores it as (kind, id).
    pub(crate) fn put_meta(&self, kind: FileKind, id: &Id, plain: &[u8]) -> Result<()> {
        let zero = Id::default();
        let sealed = envelope::seal_object(
            &self.secrets.index_key,
            &self.meta_binding(meta_kind(kind), id, &zero),
            plain,
        )?;
        self.store.put(kind, id, Bytes::from(sealed))
    }

    /// Reads and opens an object sealed under the index key.
    pub(crate) fn get_meta(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let name = object_name(kind, id);
        let bytes = self.store.get(kind, id)?;
        let zero = Id::default();
        envelope::open_object(
            &self.secrets.index_key,
            &self.meta_binding(meta_kind(kind), id, &zero),
            &bytes,
        )
        .map_err(|e| Error::integrity(&name, e))
    }

    /// The plaintext data key of a session, unwrapped once per process and cached.
    pub fn session_key(&self, session: &Id) -> Result<Key32> {
        if let Some(k) = self.session_keys.lock().expect("lock").get(session) {
            return Ok(k.clone());
        }
        let name = object_name(FileKind::Key, session);
        let bytes = self
            .store
            .get(FileKind::Key, session)
            .map_err(|e| match e {
                Error::NotFound(_) => {
                    Error::integrity(&name, "the wrapped key of this session is missing")
                }
                e => e,
            })?;
        let rec: WrappedKeyRecord = serde_json::from_slice(&bytes)
            .map_err(|e| Error::integrity(&name, format!("not a wrapped-key record: {e}")))?;
        if rec.format != REPO_FORMAT {
            return Err(Error::integrity(
                &name,
                format!("record format {} refused", rec.format),
            ));
        }
        if rec.purpose != Purpose::SessionKey
            || rec.repository != self.id()
            || &rec.key_id != session
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
        let k = self.keys.decrypt(&rec.wrapped, &ctx).map_err(|e| match e {
            Error::Integrity { reason, .. } => Error::integrity(&name, reason),
            e => e,
        })?;
        self.session_keys
            .lock()
            .expect("lock")
            .insert(*session, k.clone());
        Ok(k)
    }

    pub fn pack_key(&self, session: &Id, pack: &Id) -> Result<PackKey> {
        let dek = self.session_key(session)?;
        Ok(PackKey::new(&self.id(), session, &dek, *pack))
    }

    /// Seals and stores an index segment under the index key.
    pub fn save_index_segment(&self, seg: &crate::format::index::IndexSegment) -> Result<Id> {
        let id = Id::random()?;
        self.put_meta(FileKind::Index, &id, &seg.encode())?;
        Ok(id)
    }

    pub fn load_index_segment(&self, id: &Id) -> Result<crate::format::index::IndexSegment> {
        let name = object_name(FileKind::Index, id);
        let plain = self.get_meta(FileKind::Index, id)?;
        crate::format::index::IndexSegment::decode(&plain).map_err(|e| Error::integrity(&name, e))
    }

    /// Loads every index segment for reading: a blob's location in a pack that no garbage
    /// mark condemns wins over one in a condemned pack, which is kept only as a fallback.
    /// Segments are read one at a time, so memory is the index itself.
    /// Unreadable segments are errors: an index that silently dropped entries would make
    /// dedup skip chunks that are not really stored.
    pub fn load_index(&self) -> Result<Index> {
        // Marks only order the locations here, so an unreadable one is no reason to stop a read.
        let condemned = self
            .load_marks()
            .map(|m| marks::Marks::of(&m))
            .unwrap_or_default();
        let mut index = Index::default();
        let mut fallback = Vec::new();
        self.for_each_segment(|seg| {
            index.add_segment_where(&seg, |p| !condemned.packs.contains(p));
            if !condemned.packs.is_empty() {
                let mut seg = seg;
                seg.packs.retain(|p| condemned.packs.contains(&p.pack));
                fallback.push(seg);
            }
        })?;
        for seg in &fallback {
            index.add_segment(seg);
        }
        Ok(index)
    }

    /// The index a backup deduplicates against: packs condemned by a garbage mark are left
    /// out, so a new snapshot never comes to depend on them. Returns the marks it saw.
    pub fn load_index_for_backup(&self) -> Result<(Index, marks::Marks)> {
        let marks = marks::Marks::of(&self.load_marks()?);
        let mut index = Index::default();
        self.for_each_segment(|seg| index.add_segment_where(&seg, |p| !marks.packs.contains(p)))?;
        Ok((index, marks))
    }

    /// Reads the listed index segments one by one. A segment deleted since the listing was
    /// superseded by a prune (whose consolidated segment lists its packs) and is skipped.
    fn for_each_segment(
        &self,
        mut f: impl FnMut(crate::format::index::IndexSegment),
    ) -> Result<()> {
        for (id, _) in self.store.list(FileKind::Index)? {
            match self.load_index_segment(&id) {
                Ok(seg) => f(seg),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every index segment, in listing order.
    pub fn load_segments(&self) -> Result<Vec<(Id, crate::format::index::IndexSegment)>> {
        let mut out = Vec::new();
        for (id, _) in self.store.list(FileKind::Index)? {
            match self.load_index_segment(&id) {
                Ok(seg) => out.push((id, seg)),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Reads, opens, decompresses and verifies one blob: AEAD and commitment under its pack's
    /// key, then HMAC(plaintext) == id. Nothing unverified is returned.
    /// Uses a local cache of sealed tree blobs (see [`TreeCache`]); `None` disables it.
    pub fn with_tree_cache(mut self, cache: Option<TreeCache>) -> Repository {
        self.trees = cache;
        self
    }

    pub fn tree_cache(&self) -> Option<&TreeCache> {
        self.trees.as_ref()
    }

    pub fn load_blob(&self, index: &Index, id: &Id, t: BlobType) -> Result<Vec<u8>> {
        let loc = index
            .get(id)
            .ok_or_else(|| Error::integrity(format!("{t:?} blob {id}"), "not in the index"))?;
        let cache = self.trees.as_ref().filter(|_| t == BlobType::Tree);
        if let Some(sealed) = cache.and_then(|c| c.get(id)) {
            match self.open_blob(&loc.pack, &loc.session, &loc.entry, &sealed) {
                Ok(plain) => return Ok(plain),
                // Stale (the blob now lives in another pack) or damaged: fetch it again.
                Err(_) => cache.into_iter().for_each(|c| c.remove(id)),
            }
        }
        if loc.entry.blob_type != t {
            return Err(Error::integrity(
                format!("blob {id}"),
                format!("indexed as {:?}, expected {t:?}", loc.entry.blob_type),
            ));
        }
        if loc.entry.length as u64 > MAX_BLOB {
            return Err(Error::integrity(
                object_name(FileKind::Pack, &loc.pack),
                format!(
                    "index gives blob {} an implausible length {}",
                    id.short(),
                    loc.entry.length
                ),
            ));
        }
        let sealed = self
            .store
            .get_range(
                FileKind::Pack,
                &loc.pack,
                loc.entry.offset as u64,
                loc.entry.length as u64,
            )
            .map_err(|e| match e {
                Error::NotFound(_) => Error::integrity(
                    object_name(FileKind::Pack, &loc.pack),
                    "indexed pack is missing from the store",
                ),
                e => e,
            })?;
        let plain = self.open_blob(&loc.pack, &loc.session, &loc.entry, &sealed)?;
        if let Some(c) = cache {
            c.put(id, &sealed);
        }
        Ok(plain)
    }

    /// Opens a sealed blob given its index entry (shared by restore and check).
    pub fn open_blob(
        &self,
        pack: &Id,
        session: &Id,
        entry: &crate::pack::BlobEntry,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let pname = object_name(FileKind::Pack, pack);
        let key = self.pack_key(session, pack)?;
        let body = key
            .open_blob(entry.blob_type, &entry.id, sealed)
            .map_err(|e| Error::integrity(&pname, format!("blob {}: {e}", entry.id.short())))?;
        let plain = compress::decompress(entry.compression, body, entry.raw_length as usize)
            .map_err(|e| Error::integrity(&pname, format!("blob {}: {e}", entry.id.short())))?;
        if plain.len() != entry.raw_length as usize {
            return Err(Error::integrity(
                &pname,
                format!(
                    "blob {}: {} bytes where the index says {}",
                    entry.id.short(),
                    plain.len(),
                    entry.raw_length
                ),
            ));
        }
        if self.chunk_id(&plain) != entry.id {
            return Err(Error::integrity(
                &pname,
                format!("blob {}: plaintext does not match its id", entry.id.short()),
            ));
        }
        Ok(plain)
    }

    /// Loads several trees at once, up to 8 reads in flight: a walk over a remote bucket is
    /// otherwise one round trip per folder. Results come in the order of `ids`.
    pub fn load_trees(&self, index: &Index, ids: &[Id]) -> Vec<Result<Tree>> {
        const IN_FLIGHT: usize = 8;
        if ids.len() <= 1 {
            return ids.iter().map(|id| self.load_tree(index, id)).collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let out: Vec<Mutex<Option<Result<Tree>>>> = ids.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..IN_FLIGHT.min(ids.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    *out[i].lock().expect("lock") = Some(self.load_tree(index, id));
                });
            }
        });
        out.into_iter()
            .map(|m| {
                m.into_inner()
                    .expect("lock")
                    .unwrap_or_else(|| Err(Error::Internal("tree loader stopped".into())))
            })
            .collect()
    }

    pub fn load_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let b = self.load_blob(index, id, BlobType::Tree)?;
        Tree::decode(&b).map_err(|e| Error::integrity(format!("tree {id}"), e))
    }
}
