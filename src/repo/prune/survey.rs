//! What prune reads before it decides anything: marks, packs, keys, snapshots and their trees,
//! index segments. This is the only part of prune that reads the store; planning is pure
//! ([`super::plan`]) and deleting is the executor's ([`super::execute`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::format::garbage::GarbageMark;
use crate::format::index::IndexSegment;
use crate::format::tree::NodeKind;
use crate::id::{BlobId, MarkId, PackId, SegmentId, SessionId};
use crate::repo::activity::Activity;
use crate::repo::lock::Lock;
use crate::repo::marks::Marks;
use crate::repo::walk::{TreeWalker, Visits};
use crate::repo::{Index, Repository};
use crate::store::{object_name, FileKind};

/// Everything prune needs to know, listed in this order: marks, packs, keys, snapshots,
/// index segments. Snapshots come after the marks, so every snapshot committed before a mark
/// was read is seen; segments come after the snapshots, so each snapshot's blobs are indexed.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// Taken before anything is listed: every age (of marks, of keys) is measured from here,
    /// so time spent surveying never makes a mark look older than the listing it was
    /// checked against.
    pub start: DateTime<Utc>,
    pub marks: Vec<(MarkId, GarbageMark)>,
    pub segments: Vec<(SegmentId, IndexSegment)>,
    /// Packs listed by a segment the owner signed (all of them in a legacy repository): their
    /// listings were verified or written by prune. Writers' listings of other packs are claims,
    /// verified before prune lists them again under the owner's signature.
    pub vouched: HashSet<PackId>,
    /// Packs in the store with their sizes.
    pub stored: HashMap<PackId, u64>,
    /// Session keys with their creation times (`None`: unreadable record).
    pub keys: Vec<(SessionId, Option<DateTime<Utc>>)>,
    /// Blobs (trees and chunks) that some listed snapshot needs.
    pub referenced: HashSet<BlobId>,
    /// Sessions that wrote a listed snapshot.
    pub snapshot_sessions: HashSet<SessionId>,
    pub snapshots: usize,
    /// Listed copies of blobs that were read and did not verify (a forged or corrupt listing,
    /// or a damaged pack): never counted as a copy by the planners. Filled by the executor's
    /// verification, not by the survey.
    pub bad_copies: HashSet<(PackId, BlobId)>,
}

pub fn survey(repo: &Repository, lock: &mut Option<Lock<'_>>, act: &Activity) -> Result<Survey> {
    act.set("listing the repository");
    let start = Utc::now();
    let marks = repo.load_marks()?;
    let stored = repo.stored_packs()?;
    let keys = crate::repo::check::wrapped_keys(repo)?
        .into_iter()
        .map(|(id, r)| (id, r.map(|r| repo.authenticated_created(&r))))
        .collect();
    // Snapshots are listed before the index: a snapshot is written after its index segment,
    // so every snapshot listed here finds its blobs in the segments listed next. The listing
    // is the one the history was checked on: a store that hides a snapshot the history lists
    // stops the prune here, before anything is condemned (docs/FORMAT.md §18).
    act.set("checking the history");
    let history = repo.history()?;
    history.require_intact("prune")?;
    let snapshot_ids = history.stored;
    let (segments, vouched_segments) = repo.load_segments_vouched()?;
    let vouched = segments
        .iter()
        .filter(|(id, _)| vouched_segments.contains(id))
        .flat_map(|(_, seg)| seg.packs.iter().map(|p| p.pack))
        .collect();
    let condemned = Marks::of(&marks);
    let index = Index::live_first(segments.iter().map(|(_, seg)| seg), &condemned.packs);
    let mut walker = TreeWalker::new(repo, &index, Visits::Once);
    let mut referenced = HashSet::new();
    let mut snapshot_sessions = HashSet::new();
    let mut snapshots = 0;
    let unreadable = |what: String, e: Error| {
        Error::integrity(
            what,
            format!("{e}; prune needs every snapshot readable to know what is in use: nothing was changed"),
        )
    };
    let total = snapshot_ids.len();
    for (n, id) in snapshot_ids.into_iter().enumerate() {
        act.set(format!(
            "reading snapshot {}/{total} and its folders",
            n + 1
        ));
        let snap = match repo.load_snapshot(&id) {
            Ok(s) => s,
            // Forgotten between our listing and our read.
            Err(Error::NotFound(_)) => continue,
            // Signed by no one the owner accepts (a forgery, or a revoked writer's later
            // snapshot): it protects no data, and `check` names it. Its session key is kept,
            // so that it still opens for `check` and `forget ID`.
            Err(e) if e.is_untrusted() => {
                tracing::warn!("snapshot ignored: {e}");
                match repo.snapshot_session(&id) {
                    Ok(s) => {
                        snapshot_sessions.insert(s);
                    }
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            Err(e) if e.is_key_service() => return Err(e),
            Err(e) => return Err(unreadable(object_name(FileKind::Snapshot, &id), e)),
        };
        snapshots += 1;
        snapshot_sessions.insert(snap.session);
        walker.walk(vec![(snap.tree, ())], |t, _, tree, next| {
            if let Some(l) = lock.as_mut() {
                l.refresh()?;
            }
            let tree = tree.map_err(|e| {
                if e.is_key_service() {
                    e
                } else {
                    unreadable(format!("tree {t}"), e)
                }
            })?;
            for n in tree.nodes {
                match n.kind {
                    NodeKind::Dir => next.extend(n.subtree.map(|s| (s, ()))),
                    NodeKind::File => referenced.extend(n.content.iter().map(BlobId::from)),
                    _ => {}
                }
            }
            Ok(())
        })?;
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
    }
    referenced.extend(walker.seen().iter().map(BlobId::from));
    Ok(Survey {
        start,
        marks,
        segments,
        vouched,
        stored,
        keys,
        referenced,
        snapshot_sessions,
        snapshots,
        bad_copies: HashSet::new(),
    })
}
