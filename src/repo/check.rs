//! `check`: structure (config, keys, index, snapshots, trees, every referenced chunk indexed,
//! every indexed pack present) and, with `--read-data`, every pack read and every blob opened
//! and verified against the pack header and the index. Unreferenced packs are reported as
//! harmless leftovers (an interrupted backup leaves them; prune removes them), not as damage;
//! so are packs condemned by a garbage mark, stored or already deleted by a sweep.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::walk::{Budget, TreeWalker, Visits};
use super::{Index, Repository};
use crate::error::{Error, Result};
use crate::format::garbage::GarbageMark;
use crate::format::index::IndexSegment;
use crate::format::tree::NodeKind;
use crate::format::wrapped::WrappedKeyRecord;
use crate::id::{BlobId, PackId, SessionId, TreeId};
use crate::pack::{self, BlobEntry};
use crate::store::{object_name, FileKind};

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Read only packs in subset n of m (1-based), chosen by pack id.
    pub subset: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub object: String,
    pub message: String,
    /// True for damage or tampering; false for operational failures (I/O, key service).
    pub integrity: bool,
    #[serde(skip)]
    pub key_service: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub trees: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_verified: usize,
    /// Packs no index lists (an interrupted backup or prune left them; prune removes them).
    pub leftovers: Vec<String>,
    /// Partial files of interrupted writes (local stores), with their sizes: harmless;
    /// prune removes them once unchanged past the grace period.
    #[serde(default)]
    pub temporaries: Vec<(String, u64)>,
    /// Packs a garbage mark condemned, still stored until a prune after the grace period.
    pub condemned: usize,
    /// Garbage marks waiting for their grace period to end.
    pub marks: usize,
    /// Snapshots dated more than the clock-skew allowance in the future (a clock running
    /// ahead, or a forgery): not damage, but `forget` does not count them.
    #[serde(default)]
    pub future_dated: Vec<String>,
    /// Snapshots whose ids are random (made before ids were bound to manifests): a
    /// manifest written over one of them is not detected.
    #[serde(default)]
    pub unbound_ids: usize,
    /// Objects here are not signed (a repository from before writer provenance): nothing
    /// tells a writer's objects from the owner's. `custody migrate` signs them.
    #[serde(default)]
    pub unsigned: bool,
    /// Enrolled writers, and how many of them are revoked.
    #[serde(default)]
    pub writers: usize,
    #[serde(default)]
    pub revoked_writers: usize,
    /// The newest history checkpoint's number (0: none yet) and the chains of snapshots the
    /// history follows (docs/FORMAT.md §18).
    #[serde(default)]
    pub history_generation: u64,
    #[serde(default)]
    pub chains: usize,
    /// Snapshots still stored that a checkpoint forgot (an interrupted forget, or put back
    /// by the custodian): not counted; the next `forget` deletes them.
    #[serde(default)]
    pub forgotten: Vec<String>,
    /// Snapshots made before chains existed: not covered by the history.
    #[serde(default)]
    pub unchained: usize,
    /// Packs found missing or damaged now and recorded as such (`damaged/`), so that backups
    /// store their chunks again (docs/FORMAT.md §14d).
    #[serde(default)]
    pub damage_recorded: usize,
    /// Restore requests and their answers, all verified (docs/FORMAT.md §19), and snapshots
    /// with no record of the sessions they need (`repair reach` records it).
    #[serde(default)]
    pub requests: usize,
    #[serde(default)]
    pub approvals: usize,
    #[serde(default)]
    pub without_reach: usize,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    fn problem(&mut self, e: &Error, fallback_object: &str) {
        let (object, message) = match e {
            Error::Integrity { object, reason } => (object.clone(), reason.clone()),
            Error::Untrusted { object, reason } => (object.clone(), format!("untrusted: {reason}")),
            e => (fallback_object.to_string(), e.to_string()),
        };
        self.problems.push(Problem {
            object,
            message,
            integrity: e.is_integrity(),
            key_service: e.is_key_service(),
        });
    }

    pub fn has_integrity_problems(&self) -> bool {
        self.problems.iter().any(|p| p.integrity)
    }
}

pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    let mut r = CheckReport::default();

    // Wrapped session keys: each must parse, name itself, and unwrap.
    for (sid, _) in repo.store().list(FileKind::Key)? {
        if let Err(e) = repo.session_key(&SessionId(sid)) {
            if e.is_key_service() {
                return Err(e);
            }
            r.problem(&e, &object_name(FileKind::Key, &sid));
        }
    }

    // Writer provenance: enrollments and revocations the owner did not sign, and locks
    // signed by anyone but the owner (marks, segments and snapshots are checked below).
    r.unsigned = !repo.is_signed();
    if let Some(roster) = repo.roster() {
        r.writers = roster.enrolled.len();
        r.revoked_writers = roster.revoked.len();
        for e in &roster.problems {
            r.problem(e, "");
        }
    }
    // History: snapshots it lists that the store lacks, forks, a store behind what this
    // client or its witness saw.
    if repo.is_signed() {
        let h = repo.history()?;
        r.history_generation = h.checkpoint.as_ref().map_or(0, |(_, c)| c.generation);
        r.chains = h.verdict.seen.tips.len();
        r.unchained = h.verdict.unchained;
        r.forgotten = h
            .verdict
            .forgotten
            .iter()
            .map(|id| object_name(FileKind::Snapshot, id))
            .collect();
        for p in &h.verdict.problems {
            let object = match p {
                super::history::Problem::Missing {
                    snapshot: Some(s), ..
                } => object_name(FileKind::Snapshot, s),
                _ => "history".into(),
            };
            let what = if p.is_rollback() {
                format!("rollback: {p}")
            } else {
                p.to_string()
            };
            r.problem(&Error::integrity(object, what), "");
        }
        for e in &h.bad_checkpoints {
            r.problem(e, "");
        }
    }
    let ((without_reach, requests, approvals), problems) = repo.check_requests()?;
    (r.without_reach, r.requests, r.approvals) = (without_reach, requests, approvals);
    for e in &problems {
        r.problem(e, "");
    }
    repo.for_each_object::<crate::format::garbage::LockRecord>(|id, l| {
        if let Err(e) = l {
            r.problem(&e, &object_name(FileKind::Lock, &id));
        }
        Ok(())
    })?;

    // Garbage marks: what they condemn may be missing already (a sweep in progress).
    let mut marks = Vec::new();
    repo.for_each_object::<GarbageMark>(|id, m| {
        match m {
            Ok(m) => marks.push((id, m)),
            Err(e) => r.problem(&e, &object_name(FileKind::Garbage, &id)),
        }
        Ok(())
    })?;
    r.marks = marks.len();
    let condemned = super::marks::Marks::of(&marks);

    // Index segments; a location in a condemned pack is only a fallback.
    let mut listed = Vec::new();
    repo.for_each_object::<IndexSegment>(|id, seg| {
        match seg {
            Ok(seg) => listed.push((id, seg)),
            Err(e) => r.problem(&e, &object_name(FileKind::Index, &id)),
        }
        Ok(())
    })?;
    // Two segments that list one pack differently: forged or corrupt (prune refuses them).
    if let Err(e) = super::prune::plan::pack_table(&listed) {
        r.problem(&e, "");
    }
    let segments: Vec<_> = listed.into_iter().map(|(_, seg)| seg).collect();
    let index = Index::live_first(&segments, &condemned.packs);
    let stored = repo.stored_packs()?;
    r.packs = stored.len();
    // Every listing of each pack, not only the locations the index tries first: a claim that
    // a pack holds blobs it does not (a forged listing kept as a fallback) is named too.
    let mut by_pack: HashMap<PackId, Vec<BlobEntry>> = HashMap::new();
    for p in segments.iter().flat_map(|seg| &seg.packs) {
        let entries = by_pack.entry(p.pack).or_default();
        for b in &p.blobs {
            if !entries.contains(b) {
                entries.push(*b);
            }
        }
    }
    let mut damaged = HashSet::new();
    for (pack, _) in index.packs() {
        match stored.get(pack) {
            None if condemned.packs.contains(pack) => {}
            None => {
                damaged.insert(*pack);
                r.problem(
                    &Error::integrity(
                        object_name(FileKind::Pack, pack),
                        "indexed pack is missing from the store",
                    ),
                    "",
                )
            }
            Some(&size) => {
                let end = by_pack
                    .get(pack)
                    .into_iter()
                    .flatten()
                    .map(|e| e.offset as u64 + e.length as u64)
                    .max()
                    .unwrap_or(0);
                if end > size {
                    damaged.insert(*pack);
                    r.problem(
                        &Error::integrity(
                            object_name(FileKind::Pack, pack),
                            format!("pack is {size} bytes but the index places a blob up to byte {end} (truncated)"),
                        ),
                        "",
                    );
                }
            }
        }
    }
    for id in stored.keys() {
        if condemned.packs.contains(id) {
            r.condemned += 1;
        } else if !index.has_pack(id) {
            r.leftovers.push(object_name(FileKind::Pack, id));
        }
    }
    r.leftovers.sort();
    r.temporaries = repo.store().temporaries(std::time::Duration::ZERO)?;

    // Snapshots and every tree they reach.
    let mut walker = TreeWalker::new(repo, &index, Visits::Once);
    // Each folder's subfolders, to see what each snapshot expands to without expanding it.
    let mut children: HashMap<TreeId, Vec<TreeId>> = HashMap::new();
    let mut budgets = Vec::new();
    for id in repo.snapshot_ids()? {
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            Err(e) if e.is_key_service() => return Err(e),
            Err(e) => {
                r.problem(&e, &object_name(FileKind::Snapshot, &id));
                continue;
            }
        };
        r.snapshots += 1;
        if !repo.snapshot_id_is_bound(&id) {
            r.unbound_ids += 1;
        }
        if snap.time > chrono::Utc::now() + super::forget::CLOCK_SKEW {
            r.future_dated.push(format!(
                "{} ({}, host {})",
                object_name(FileKind::Snapshot, &id),
                snap.time.format("%Y-%m-%d %H:%M:%S UTC"),
                snap.host
            ));
        }
        budgets.push((id, snap.tree, Budget::for_snapshot(&snap)));
        walker.walk(vec![(snap.tree, ())], |t, _, tree, next| {
            let tree = match tree {
                Ok(tree) => tree,
                Err(e) if e.is_key_service() => return Err(e),
                Err(e) => {
                    r.problem(&e, &format!("tree {t}"));
                    return Ok(());
                }
            };
            r.trees += 1;
            let subs = children.entry(*t).or_default();
            for n in tree.nodes {
                match n.kind {
                    NodeKind::Dir => {
                        subs.extend(n.subtree);
                        next.extend(n.subtree.map(|s| (s, ())));
                    }
                    NodeKind::File => {
                        for c in n.content.iter().filter(|c| !index.contains(*c)) {
                            r.problem(
                                &Error::integrity(
                                    format!("snapshot {}", id.short()),
                                    format!(
                                        "file {} refers to chunk {} that no index lists",
                                        crate::human::escape_bytes(&n.name.0),
                                        c.short()
                                    ),
                                ),
                                "",
                            );
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })?;
    }

    // What each snapshot would expand to when restored (trees are shared by content, so a
    // forged graph can expand exponentially): counted, not expanded.
    let mut memo = HashMap::new();
    for (id, root, budget) in budgets {
        let (trees, depth) = expansion(&root, &children, &mut memo);
        if trees > budget.max_trees || depth > budget.max_depth as u64 {
            let e = budget.exceeded(&format!(
                "snapshot {} expands to {trees} folders, {depth} levels deep",
                id.short()
            ));
            r.problem(&e, "");
        }
    }

    if opts.read_data {
        for (pack, session) in index.packs() {
            if let Some((n, m)) = opts.subset {
                if (pack.as_bytes()[0] as u32) % m != n - 1 {
                    continue;
                }
            }
            if !stored.contains_key(pack) {
                continue;
            }
            r.packs_read += 1;
            let expected = by_pack.get(pack).cloned().unwrap_or_default();
            match read_pack(repo, pack, session, &expected) {
                Ok(n) => r.blobs_verified += n,
                Err(e) if e.is_key_service() => return Err(e),
                Err(e) => {
                    if e.is_integrity() {
                        damaged.insert(*pack);
                    }
                    r.problem(&e, &object_name(FileKind::Pack, pack))
                }
            }
        }
    }
    r.damage_recorded = repo.record_damage(&damaged)?;
    Ok(r)
}

/// Reads a whole pack, opens its header and every blob, and compares with the index.
pub(crate) fn read_pack(
    repo: &Repository,
    pack: &PackId,
    session: &SessionId,
    expected: &[BlobEntry],
) -> Result<usize> {
    let bytes = repo.store().get(FileKind::Pack, pack)?;
    let (_, entries) = verify_pack(repo, pack, Some(session), expected, &bytes)?;
    Ok(entries.len())
}

/// Opens a whole pack's header and every blob it lists; returns its session and listing.
/// With `session`, the header must name it and every `expected` entry must match the header;
/// without, the header's own session is used (`repair index`: its AEAD under that session's
/// key authenticates the listing, and each blob is verified against its id).
pub(crate) fn verify_pack(
    repo: &Repository,
    pack: &PackId,
    session: Option<&SessionId>,
    expected: &[BlobEntry],
    bytes: &[u8],
) -> Result<(SessionId, Vec<BlobEntry>)> {
    let name = object_name(FileKind::Pack, pack);
    let len = bytes.len();
    if len < pack::TRAILER_LEN {
        return Err(Error::integrity(
            &name,
            "shorter than a pack trailer (truncated)",
        ));
    }
    let range = pack::header_range(len as u64, &bytes[len - pack::TRAILER_LEN..])
        .map_err(|e| Error::integrity(&name, e))?;
    let sealed = &bytes[range.start as usize..range.end as usize];
    let sealed_by = pack::header_session(sealed).map_err(|e| Error::integrity(&name, e))?;
    let session = session.unwrap_or(&sealed_by);
    if &sealed_by != session {
        return Err(Error::integrity(
            &name,
            format!(
                "sealed by session {} but indexed under session {} (swapped or foreign pack)",
                sealed_by.short(),
                session.short()
            ),
        ));
    }
    let key = repo.pack_key(session, pack)?;
    let header = key
        .open_header(sealed)
        .map_err(|e| Error::integrity(&name, format!("pack header: {e}")))?;
    let entries = pack::decode_header(&header).map_err(|e| Error::integrity(&name, e))?;
    let in_header: HashMap<BlobId, BlobEntry> = entries.iter().map(|e| (e.id, *e)).collect();
    for e in expected {
        if in_header.get(&e.id) != Some(e) {
            return Err(Error::integrity(
                &name,
                format!(
                    "index entry for blob {} does not match the pack header",
                    e.id.short()
                ),
            ));
        }
    }
    for e in &entries {
        let end = e.offset as usize + e.length as usize;
        if end > range.start as usize {
            return Err(Error::integrity(
                &name,
                format!("blob {} overlaps the header", e.id.short()),
            ));
        }
        repo.open_blob(pack, session, e, &bytes[e.offset as usize..end])?;
    }
    Ok((sealed_by, entries))
}

/// Wrapped-key records of the repository, for `key list`.
pub fn wrapped_keys(repo: &Repository) -> Result<Vec<(SessionId, Option<WrappedKeyRecord>)>> {
    let mut out = Vec::new();
    for (id, _) in repo.store().list(FileKind::Key)? {
        let id = SessionId(id);
        out.push((id, repo.load_key_record(&id).ok()));
    }
    Ok(out)
}

/// How many trees a walk per path from `root` visits, and how deep it goes (saturating), from
/// each tree's subtrees; computed once per tree, without recursion (graphs may be deep).
fn expansion(
    root: &TreeId,
    children: &HashMap<TreeId, Vec<TreeId>>,
    memo: &mut HashMap<TreeId, (u64, u64)>,
) -> (u64, u64) {
    let mut stack = vec![(*root, false)];
    while let Some((t, done)) = stack.pop() {
        if memo.contains_key(&t) {
            continue;
        }
        let subs = children.get(&t).map(Vec::as_slice).unwrap_or(&[]);
        if done {
            let (mut trees, mut depth) = (1u64, 1u64);
            for s in subs {
                let (n, d) = memo.get(s).copied().unwrap_or((1, 1));
                trees = trees.saturating_add(n);
                depth = depth.max(d.saturating_add(1));
            }
            memo.insert(t, (trees, depth));
        } else {
            stack.push((t, true));
            stack.extend(
                subs.iter()
                    .filter(|s| !memo.contains_key(s))
                    .map(|s| (*s, false)),
            );
        }
    }
    memo.get(root).copied().unwrap_or((1, 1))
}
