//! Snapshot manifests: seal, store, load, list, and resolve `id | prefix | latest`.

use bytes::Bytes;

use super::provenance::Signer;
use super::{Repository, Session};
use crate::crypto::envelope::{self, Binding, ObjectKind};
use crate::error::{Error, Result};
use crate::format::snapshot::{bound_id, Snapshot};
use crate::id::{Id, SessionId, SnapshotId, TreeId};
use crate::repo::forget::CLOCK_SKEW;
use crate::store::{object_name, FileKind};

/// Snapshots that open (oldest first), and the integrity failures of those that do not.
pub type ReadableSnapshots = (Vec<(SnapshotId, Snapshot)>, Vec<Error>);

/// One line of `snapshots`: what `snapshots --json` reports for each snapshot (stable field
/// names: scripts parse them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotListing {
    pub id: SnapshotId,
    pub short_id: String,
    pub time: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub username: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub tree: TreeId,
    pub session: SessionId,
    pub parent: Option<SnapshotId>,
    pub summary: crate::format::snapshot::Summary,
    /// Dated more than [`CLOCK_SKEW`] in the future: a clock running ahead, or a forgery
    /// (`forget` keeps such snapshots and does not count them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub future_dated: bool,
}

impl SnapshotListing {
    pub fn new(id: SnapshotId, s: Snapshot) -> SnapshotListing {
        SnapshotListing {
            id,
            short_id: id.short(),
            time: s.time,
            host: s.host,
            username: s.username,
            paths: s.paths,
            tags: s.tags,
            tree: s.tree,
            session: s.session,
            parent: s.parent,
            future_dated: s.time > chrono::Utc::now() + CLOCK_SKEW,
            summary: s.summary,
        }
    }
}

/// The `snapshots` table: a JSON array, or aligned columns for a person.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SnapshotTable(pub Vec<SnapshotListing>);

impl std::fmt::Display for SnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Host, tags and paths come from manifests: escaped for the terminal.
        use crate::human::escape;
        writeln!(
            f,
            "{:<10} {:<25} {:<16} {:>11}  {:<12} paths",
            "id", "time", "host", "size", "tags"
        )?;
        for s in &self.0 {
            writeln!(
                f,
                "{:<10} {:<25} {:<16} {:>11}  {:<12} {}",
                s.short_id,
                crate::human::local_time(s.time),
                escape(&s.host),
                crate::human::bytes(s.summary.bytes_processed),
                escape(&s.tags.join(",")),
                escape(&s.paths.join(" "))
            )?;
        }
        let future = self.0.iter().filter(|s| s.future_dated).count();
        if future > 0 {
            writeln!(
                f,
                "{future} snapshot(s) dated more than {} h in the future (a clock running ahead, or a forgery): forget keeps them and does not count them",
                CLOCK_SKEW.num_hours()
            )?;
        }
        Ok(())
    }
}

/// One row of `ls --json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LsEntry {
    /// The path inside the snapshot, from its root (`/src/a.txt`).
    pub path: String,
    /// `file`, `dir`, `symlink`, `fifo`, `chardev` or `blockdev`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: Option<chrono::DateTime<chrono::Utc>>,
    /// A symlink's target.
    pub target: Option<String>,
}

impl LsEntry {
    pub fn new(path: String, n: &crate::format::tree::Node) -> LsEntry {
        use crate::format::tree::NodeKind;
        LsEntry {
            path,
            kind: match n.kind {
                NodeKind::File => "file",
                NodeKind::Dir => "dir",
                NodeKind::Symlink => "symlink",
                NodeKind::Fifo => "fifo",
                NodeKind::CharDevice => "chardev",
                NodeKind::BlockDevice => "blockdev",
            }
            .into(),
            size: n.size,
            mode: n.mode,
            mtime: chrono::DateTime::from_timestamp(n.mtime_sec, n.mtime_nsec),
            target: n.target.as_ref().map(|t| t.lossy()),
        }
    }
}

/// Filters for `latest` and for listings.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &s.host == h)
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// A manifest is bound to its repository, its own id and the session whose key seals it.
fn snapshot_binding<'a>(
    repo: &'a Id,
    zero: &'a Id,
    id: &'a SnapshotId,
    session: &'a SessionId,
) -> Binding<'a> {
    Binding {
        repo,
        kind: ObjectKind::Snapshot,
        container: zero,
        object: id,
        key_id: session,
    }
}

impl Repository {
    /// True when `id` is bound to its manifest (made by this version or later); the random
    /// ids of older snapshots are not, and a manifest written over one is not detected.
    pub fn snapshot_id_is_bound(&self, id: &SnapshotId) -> bool {
        bound_id::is_bound(&self.secrets.snapshot_id_key, id)
    }

    /// Seals and stores a new manifest under the id bound to it.
    pub fn save_snapshot(&self, session: &Session, snap: &Snapshot) -> Result<SnapshotId> {
        let (id, json) = self.manifest_of(snap)?;
        self.put_manifest(session, &id, &json, true)?;
        Ok(id)
    }

    /// A new manifest's JSON and the id it will be stored under (bound to it).
    pub(super) fn manifest_of(&self, snap: &Snapshot) -> Result<(SnapshotId, Vec<u8>)> {
        // Padded to a multiple of 1 KiB: the size says little about paths or tags.
        let json = crate::format::padded_json(snap, 1024);
        let id = bound_id::of(&self.secrets.snapshot_id_key, &json)
            .ok_or_else(|| Error::Internal("manifest JSON without its session".into()))?;
        Ok((id, json))
    }

    /// Seals a manifest again under `session`, in place (`rotate reencrypt`): the stored JSON
    /// is kept byte for byte but for the session's digits, so the snapshot keeps its id.
    /// Returns the manifest as now stored.
    pub fn reseal_snapshot(&self, session: &Session, id: &SnapshotId) -> Result<Snapshot> {
        let name = object_name(FileKind::Snapshot, id);
        let (mut json, _, _) = self.open_manifest(id)?;
        let at = bound_id::session_digits(&json)
            .ok_or_else(|| Error::integrity(&name, "manifest without a session"))?;
        json[at..at + 64].copy_from_slice(session.id.to_hex().as_bytes());
        let snap = self.parse_manifest(id, &json, &session.id)?;
        self.put_manifest(session, id, &json, false)?;
        Ok(snap)
    }

    pub(super) fn put_manifest(
        &self,
        session: &Session,
        id: &SnapshotId,
        json: &[u8],
        new: bool,
    ) -> Result<()> {
        let (repo, zero) = (self.id(), Id::default());
        let b = snapshot_binding(&repo, &zero, id, &session.id);
        let plain = self.sign_body(ObjectKind::Snapshot, id, json.to_vec());
        let sealed = envelope::seal_object(session.dek(), &b, &plain)?;
        let sealed = Bytes::from(sealed);
        // A new manifest never replaces one (where the server can refuse it); re-encryption
        // seals an existing one again in place.
        if new {
            self.store()
                .put_new(FileKind::Snapshot, id, sealed.clone())?;
            // The next backup's parent, most likely.
            self.cache_manifest(id, &sealed, &plain, &session.id);
            Ok(())
        } else {
            self.store().put(FileKind::Snapshot, id, sealed)
        }
    }

    /// Whether this client's key service opens snapshots at all. A writer's usually cannot
    /// (it wraps session keys but does not unwrap them): reading the history would only
    /// collect a refusal per session from the key service, each an entry in its audit log
    /// (CloudTrail for AWS KMS). So a writer asks about one listed snapshot's session first.
    /// Anything but a refusal (no snapshot, a damaged one, a key that opens) says yes: the
    /// history read then judges.
    pub fn opens_snapshots(&self) -> Result<bool> {
        if !matches!(
            self.provenance(),
            super::provenance::Provenance::Writer { .. }
        ) {
            return Ok(true);
        }
        let Some(id) = self.snapshot_ids()?.into_iter().next() else {
            return Ok(true);
        };
        let Ok(session) = self.snapshot_session(&id) else {
            return Ok(true);
        };
        match self.session_key(&session) {
            Err(e) if e.is_key_service() => Ok(false),
            _ => Ok(true),
        }
    }

    /// The session a stored manifest names in its envelope header (not authenticated: for
    /// keeping that session's key, never for trusting the manifest).
    pub fn snapshot_session(&self, id: &SnapshotId) -> Result<SessionId> {
        let name = object_name(FileKind::Snapshot, id);
        let bytes = self.store().get(FileKind::Snapshot, id)?;
        let h = envelope::parse_header(&bytes).map_err(|e| Error::integrity(&name, e))?;
        Ok(SessionId(h.key_id))
    }

    /// Reads and opens a manifest: its JSON (signature checked and removed), the session whose
    /// key sealed it, and who signed it.
    fn open_manifest(&self, id: &SnapshotId) -> Result<(Vec<u8>, SessionId, Option<Signer>)> {
        let bytes = self.store().get(FileKind::Snapshot, id)?;
        self.open_sealed_manifest(id, &bytes)
    }

    /// [`Repository::open_manifest`] of the sealed bytes given.
    fn open_sealed_manifest(
        &self,
        id: &SnapshotId,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, SessionId, Option<Signer>)> {
        let (plain, session) = self.unseal_manifest(id, bytes)?;
        let (json, signer) = self.verify_manifest(id, &plain)?;
        Ok((json, session, signer))
    }

    /// Opens a manifest's envelope with its session's key: its plaintext (signature trailer
    /// included) and the session.
    pub(super) fn unseal_manifest(
        &self,
        id: &SnapshotId,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, SessionId)> {
        let name = object_name(FileKind::Snapshot, id);
        let h = envelope::parse_header(bytes).map_err(|e| Error::integrity(&name, e))?;
        let session = SessionId(h.key_id);
        let dek = self.session_key(&session)?;
        let (repo, zero) = (self.id(), Id::default());
        let b = snapshot_binding(&repo, &zero, id, &session);
        let plain =
            envelope::open_object(&dek, &b, bytes).map_err(|e| Error::integrity(&name, e))?;
        Ok((plain, session))
    }

    /// Checks an opened manifest's signature and whether its signer may have written it: its
    /// JSON and who signed it.
    fn verify_manifest(&self, id: &SnapshotId, plain: &[u8]) -> Result<(Vec<u8>, Option<Signer>)> {
        let name = object_name(FileKind::Snapshot, id);
        match self.verify_body(ObjectKind::Snapshot, &name, id, plain) {
            Ok(verified) => Ok(verified),
            // Untrusted and not the manifest its id was made from: it may have been written over
            // a genuine snapshot, so it stays an integrity failure (prune stops, rather than
            // free what the original needed). Under a bound id it matches, it replaced nothing.
            Err(Error::Untrusted { reason, .. }) if self.may_have_replaced(id, plain) => {
                Err(Error::integrity(
                    &name,
                    format!("{reason}; and it is not the manifest its id was made from (it may have replaced a genuine snapshot)"),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a refused manifest could stand where another one was: its id is random, or
    /// bound to some other manifest. Its body is the plaintext without a signature trailer.
    fn may_have_replaced(&self, id: &SnapshotId, plain: &[u8]) -> bool {
        use crate::format::signature::{MAGIC, TRAILER_LEN};
        let body = match plain.len().checked_sub(TRAILER_LEN) {
            Some(at) if plain[at..].starts_with(&MAGIC) => &plain[..at],
            _ => plain,
        };
        let key = &self.secrets.snapshot_id_key;
        !(bound_id::is_bound(key, id) && bound_id::matches(key, id, body))
    }

    /// Decodes an opened manifest and checks it: format, its id's binding, its session.
    fn parse_manifest(
        &self,
        id: &SnapshotId,
        json: &[u8],
        sealed_by: &SessionId,
    ) -> Result<Snapshot> {
        let name = object_name(FileKind::Snapshot, id);
        let snap: Snapshot = crate::format::from_json("manifest", json)
            .and_then(|s: Snapshot| crate::format::check_format("manifest", s.format).map(|()| s))
            .map_err(|e| Error::integrity(&name, e))?;
        let key = &self.secrets.snapshot_id_key;
        if bound_id::is_bound(key, id) && !bound_id::matches(key, id, json) {
            return Err(Error::integrity(
                &name,
                "the manifest stored under this id is not the one the id was made from \
                 (replaced or forged: the original snapshot is gone from the store)",
            ));
        }
        if snap.session != *sealed_by {
            return Err(Error::integrity(
                &name,
                "manifest names another session than its key",
            ));
        }
        Ok(snap)
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        self.load_snapshot_signed(id).map(|(s, _)| s)
    }

    /// Who signed a snapshot (`None` in a legacy repository).
    pub fn snapshot_signer(&self, id: &SnapshotId) -> Result<Option<Signer>> {
        self.load_snapshot_signed(id).map(|(_, s)| s)
    }

    /// [`Repository::load_snapshot`] from the bucket's copy, also where a history cache is in
    /// use: what a restore restores is the manifest the bucket holds, so one replaced there
    /// is refused as it would be without the cache.
    pub fn load_snapshot_from_store(&self, id: &SnapshotId) -> Result<Snapshot> {
        let bytes = self.store().get(FileKind::Snapshot, id)?;
        let (plain, session) = self.unseal_manifest(id, &bytes)?;
        let (snap, _) = self.snapshot_from_opened(id, &plain, &session)?;
        self.cache_manifest(id, &bytes, &plain, &session);
        Ok(snap)
    }

    /// [`Repository::load_snapshot`], and who signed it.
    pub fn load_snapshot_signed(&self, id: &SnapshotId) -> Result<(Snapshot, Option<Signer>)> {
        if let Some(c) = &self.history_cache {
            return self.load_snapshot_cached(id, c);
        }
        let bytes = self.store().get(FileKind::Snapshot, id)?;
        self.snapshot_from_sealed(id, &bytes)
    }

    /// Opens, decodes and checks a sealed manifest: envelope, signature, format, its id's
    /// binding, its session, and what its signer may claim.
    pub(super) fn snapshot_from_sealed(
        &self,
        id: &SnapshotId,
        bytes: &[u8],
    ) -> Result<(Snapshot, Option<Signer>)> {
        let (plain, session) = self.unseal_manifest(id, bytes)?;
        self.snapshot_from_opened(id, &plain, &session)
    }

    /// [`Repository::snapshot_from_sealed`] after the envelope: `plain` is what the key of
    /// `session` opened.
    pub(super) fn snapshot_from_opened(
        &self,
        id: &SnapshotId,
        plain: &[u8],
        session: &SessionId,
    ) -> Result<(Snapshot, Option<Signer>)> {
        let (json, signer) = self.verify_manifest(id, plain)?;
        let mut snap = self.parse_manifest(id, &json, session)?;
        // A writer signs as itself: a manifest claiming another writer is a forgery, and one
        // claiming none belongs to its signer (for `forget`'s groups).
        if let Some(Signer::Writer(w)) = signer {
            // Only the owner's `tag` writes a manifest anew; one a writer claims to be such
            // would move into the owner's chain once `rotate reencrypt` signs it again.
            if snap.original.is_some() {
                return Err(Error::untrusted(
                    object_name(FileKind::Snapshot, id),
                    format!(
                        "signed by writer {}, but claims to be a tagged copy (only the owner tags)",
                        w.short()
                    ),
                ));
            }
            match snap.writer {
                Some(claimed) if claimed != w => {
                    return Err(Error::untrusted(
                        object_name(FileKind::Snapshot, id),
                        format!(
                            "signed by {} but claims writer {}",
                            w.short(),
                            claimed.short()
                        ),
                    ))
                }
                // A link in a chain names its writer: without it, the manifest would move
                // into the owner's chain once `rotate reencrypt` signs it again.
                None if snap.chain.is_some() => {
                    return Err(Error::untrusted(
                        object_name(FileKind::Snapshot, id),
                        format!(
                            "signed by writer {}, but names no writer for its place in a chain",
                            w.short()
                        ),
                    ))
                }
                _ => snap.writer = Some(w),
            }
            // A writer enrolled for some hosts only cannot speak for another.
            let hosts = self
                .roster()
                .and_then(|r| r.enrolled.get(&w))
                .map(|e| &e.hosts);
            if let Some(hosts) = hosts.filter(|h| !h.is_empty() && !h.contains(&snap.host)) {
                return Err(Error::untrusted(
                    object_name(FileKind::Snapshot, id),
                    format!(
                        "claims host {:?}, but writer {} may only back up {}",
                        snap.host,
                        w.short(),
                        hosts.join(", ")
                    ),
                ));
            }
        }
        Ok((snap, signer))
    }

    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .store()
            .list(FileKind::Snapshot)?
            .into_iter()
            .map(|(id, _)| SnapshotId(id))
            .collect())
    }

    /// Every live snapshot that opens, oldest first, and the integrity failures of those that
    /// do not (damaged, or a manifest written over another) and of snapshots the history
    /// lists but the store lacks (docs/FORMAT.md §18): one bad manifest does not hide the
    /// others. A rollback, key-service and store failures stop it.
    pub fn list_readable_snapshots(&self) -> Result<ReadableSnapshots> {
        let h = self.history()?;
        if let Some(e) = h.rollback() {
            return Err(e);
        }
        // Forks hide nothing (both snapshots are listed); `check` reports them.
        let mut bad: Vec<Error> = h.losses().map(|p| Error::integrity("history", p)).collect();
        bad.extend(h.bad_checkpoints);
        bad.extend(h.unreadable);
        Ok((h.snapshots, bad))
    }

    /// Resolves a full id, a unique hex prefix, or `latest` (the newest matching `filter`).
    pub fn resolve_snapshot(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            // A manifest that does not open might be the newest: `latest` is then unknown,
            // and quietly taking an older snapshot would restore the wrong one.
            // A manifest whose signer is not accepted is not a candidate (a forgery, or a
            // revoked writer's later snapshot): it cannot be the newest genuine one.
            // A snapshot the history lists but the store lacks is not the newest of its
            // chain (that would be a rollback, which stops here). A manifest that does not
            // open might be newer than every one that does: said, not hidden, and not a
            // reason to stop restores of the snapshots that are intact.
            let mut h = self.history()?;
            if let Some(e) = h.rollback() {
                return Err(e);
            }
            // The newest snapshot of a chain as seen before does not open: taking an older
            // one would quietly restore the wrong one.
            let tips: std::collections::HashSet<SnapshotId> =
                h.verdict.seen.tips.iter().map(|t| t.snapshot).collect();
            let newest_bad = h
                .unreadable_of
                .iter()
                .position(|s| tips.contains(s) && h.unreadable_ids.contains(s));
            if let Some(i) = newest_bad {
                return Err(match h.unreadable.swap_remove(i) {
                    Error::Integrity { object, reason } => Error::integrity(
                        object,
                        format!("{reason} (the newest snapshot of its chain does not open, so `latest` is unknown: give a snapshot id)"),
                    ),
                    e => e,
                });
            }
            let mut bad: Vec<Error> = h
                .unreadable
                .into_iter()
                .filter(|e| !e.is_untrusted())
                .collect();
            let found = h
                .snapshots
                .into_iter()
                .rev()
                .find(|(_, s)| filter.matches(s));
            return match found {
                Some(s) => {
                    for e in &bad {
                        tracing::warn!("`latest` is the newest snapshot that opens; this one does not, and may be newer: {e}");
                    }
                    Ok(s)
                }
                // None opens: the reason is the damage, not an empty repository.
                None if !bad.is_empty() => Err(bad.swap_remove(0)),
                None => Err(Error::NotFound("a snapshot matching the filters".into())),
            };
        }
        if spec.is_empty() || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "snapshot {spec:?} is neither an id, an id prefix, nor `latest`"
            )));
        }
        let id = self.resolve_snapshot_id(spec)?;
        Ok((id, self.load_snapshot(&id)?))
    }

    /// Resolves a full id or a unique hex prefix from the listing alone, without reading the
    /// manifest (so that `forget ID` can remove a manifest that does not open).
    pub fn resolve_snapshot_id(&self, spec: &str) -> Result<SnapshotId> {
        if spec.is_empty() || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "snapshot {spec:?} is neither an id nor an id prefix"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let matches: Vec<SnapshotId> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec))
            .collect();
        match matches.as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::NotFound(format!("snapshot {spec}"))),
            _ => Err(Error::invalid(format!(
                "snapshot prefix {spec} is ambiguous ({} matches)",
                matches.len()
            ))),
        }
    }
}
