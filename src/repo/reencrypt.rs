//! `rotate reencrypt`: after a session data key is compromised, rewrite everything it
//! protects under a fresh one. Packs of the chosen sessions are copied blob by blob into new
//! packs (chunk ids do not change, so trees and snapshots stay valid and only the index
//! moves); the new packs are read back and verified; snapshot manifests sealed by those
//! sessions are sealed again under the new session and replaced in place (same id); then one
//! garbage mark condemns the old packs and the old wrapped keys, which a prune deletes after
//! the grace period (docs/FORMAT.md, "Re-encryption").
//!
//! Resumable: a rerun skips blobs already copied into an indexed pack of another session and
//! snapshots already sealed again; anything a killed run wrote and did not index is a
//! leftover for prune. Safe while backups run: the old packs are condemned like any other
//! garbage, so a backup that relied on them stops before committing instead of losing data.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::activity::Activity;
use super::marks::Marks;
use super::repack::Repacker;
use super::Repository;
use crate::crypto::envelope;
use crate::error::{Error, Result};
use crate::format::garbage::GarbageMark;
use crate::format::index::IndexSegment;
use crate::id::Id;
use crate::store::{object_name, FileKind};

/// Which sessions to re-encrypt.
#[derive(Debug, Clone)]
pub enum Target {
    Sessions(Vec<Id>),
    /// Sessions whose key was made before this time.
    Before(DateTime<Utc>),
    All,
}

#[derive(Debug, Default, Serialize)]
pub struct ReencryptReport {
    pub dry_run: bool,
    pub sessions: Vec<Id>,
    pub new_session: Option<Id>,
    pub packs: usize,
    pub blobs_copied: usize,
    pub blobs_already_elsewhere: usize,
    pub bytes_written: u64,
    pub snapshots_resealed: usize,
    pub mark: Option<Id>,
}

pub fn reencrypt(
    repo: &Repository,
    target: &Target,
    dry_run: bool,
    act: &Activity,
) -> Result<ReencryptReport> {
    act.set("listing the repository");
    let mut lock = if dry_run {
        None
    } else {
        Some(repo.lock("reencrypt")?)
    };
    let out = run(repo, target, dry_run, &mut lock, act);
    super::lock::release_after(lock, out)
}

fn run(
    repo: &Repository,
    target: &Target,
    dry_run: bool,
    lock: &mut Option<super::lock::Lock<'_>>,
    act: &Activity,
) -> Result<ReencryptReport> {
    // Which sessions exist, and when their keys were made.
    let keys: HashMap<Id, Option<DateTime<Utc>>> = super::check::wrapped_keys(repo)?
        .into_iter()
        .map(|(id, r)| (id, r.map(|r| r.created)))
        .collect();
    let marks = Marks::of(&repo.load_marks()?);
    let stored: HashSet<Id> = repo
        .store()
        .list(FileKind::Pack)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let snapshot_ids = repo.snapshot_ids()?;
    let segments: Vec<(Id, IndexSegment)> = repo.load_segments()?;
    // Which session sealed each snapshot manifest (its envelope header says so).
    let mut sealed_by: Vec<(Id, Id)> = Vec::new();
    for id in &snapshot_ids {
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
        if let Some(session) = sealing_session(repo, id)? {
            sealed_by.push((*id, session));
        }
    }
    // Sessions that protect something; a running backup's session protects nothing yet and
    // is left alone by --all and --before.
    let in_use: HashSet<Id> = segments
        .iter()
        .flat_map(|(_, seg)| seg.packs.iter())
        .filter(|p| !marks.packs.contains(&p.pack))
        .map(|p| p.session)
        .chain(sealed_by.iter().map(|(_, s)| *s))
        .collect();
    let sessions: HashSet<Id> = match target {
        Target::Sessions(ids) => {
            for s in ids {
                if !keys.contains_key(s) {
                    return Err(Error::NotFound(object_name(FileKind::Key, s)));
                }
            }
            ids.iter().copied().collect()
        }
        Target::Before(t) => keys
            .iter()
            .filter(|(k, c)| c.is_some_and(|c| c < *t) && in_use.contains(k))
            .map(|(k, _)| *k)
            .collect(),
        Target::All => keys
            .keys()
            .filter(|k| in_use.contains(k))
            .copied()
            .collect(),
    };
    let mut report = ReencryptReport {
        dry_run,
        sessions: {
            let mut v: Vec<Id> = sessions.iter().copied().collect();
            v.sort();
            v
        },
        ..Default::default()
    };
    if sessions.is_empty() {
        return Ok(report);
    }
    // Blobs that a live pack of another session already holds need no copy.
    let mut elsewhere: HashSet<Id> = HashSet::new();
    let mut old = Vec::new();
    let mut seen = HashSet::new();
    for (_, seg) in &segments {
        for p in &seg.packs {
            if !stored.contains(&p.pack) || !seen.insert(p.pack) {
                continue;
            }
            // A chosen session's packs are copied even when already condemned: a sweep may
            // yet keep a condemned pack that a snapshot turns out to need.
            if sessions.contains(&p.session) {
                old.push(p);
            } else if !marks.packs.contains(&p.pack) {
                elsewhere.extend(p.blobs.iter().map(|b| b.id));
            }
        }
    }
    report.packs = old.len();
    let mut copies: Vec<(
        &crate::format::index::PackEntries,
        Vec<crate::pack::BlobEntry>,
    )> = Vec::new();
    for p in &old {
        let mut todo = Vec::new();
        for b in &p.blobs {
            if elsewhere.contains(&b.id) {
                report.blobs_already_elsewhere += 1;
            } else if elsewhere.insert(b.id) {
                todo.push(*b);
            }
        }
        report.blobs_copied += todo.len();
        copies.push((p, todo));
    }
    let resealing: Vec<Id> = sealed_by
        .iter()
        .filter(|(_, s)| sessions.contains(s))
        .map(|(id, _)| *id)
        .collect();
    report.snapshots_resealed = resealing.len();
    if dry_run {
        return Ok(report);
    }
    // 1. Copy, then 2. read every new pack back before anything old is given up.
    let mut rp = Repacker::new(repo)?;
    let new_session = rp.session().id;
    report.new_session = Some(new_session);
    for (n, (p, todo)) in copies.iter().enumerate() {
        act.set(format!("copying pack {}/{}", n + 1, copies.len()));
        rp.copy(&p.pack, &p.session, todo)?;
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
    }
    let (session, written, bytes) = rp.finish()?;
    report.bytes_written = bytes;
    for (n, p) in written.iter().enumerate() {
        act.set(format!("verifying new pack {}/{}", n + 1, written.len()));
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
        super::check::read_pack(repo, &p.pack, &p.session, &p.blobs)?;
    }
    crate::failpoint::hit("reencrypt-after-copy");
    // 3. Index the new packs.
    if !written.is_empty() {
        repo.save_index_segment(&IndexSegment { packs: written })?;
    }
    crate::failpoint::hit("reencrypt-after-index");
    // 4. Seal the manifests again under the new session, verify, replace.
    // A backup of a chosen session may have committed a snapshot after the listing: the
    // snapshots are listed once more when the first list is done.
    let known: HashSet<Id> = snapshot_ids.iter().copied().collect();
    let mut todo: std::collections::VecDeque<Id> = resealing.into();
    let mut listed_again = false;
    let mut n = 0;
    loop {
        let Some(id) = todo.pop_front() else {
            if listed_again {
                break;
            }
            listed_again = true;
            for id in repo.snapshot_ids()? {
                if known.contains(&id) {
                    continue;
                }
                if sealing_session(repo, &id)?.is_some_and(|s| sessions.contains(&s)) {
                    todo.push_back(id);
                    report.snapshots_resealed += 1;
                }
            }
            continue;
        };
        let id = &id;
        n += 1;
        act.set(format!(
            "resealing snapshot {n}/{}",
            report.snapshots_resealed
        ));
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
        // Forgotten meanwhile: leave it forgotten.
        let mut snap = match repo.load_snapshot(id) {
            Ok(s) => s,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        snap.session = new_session;
        // Narrows (without conditional writes it cannot close) the window in which a
        // concurrent `forget` is undone by the replacement.
        if let Err(Error::NotFound(_)) = repo.store().size(FileKind::Snapshot, id) {
            continue;
        }
        repo.replace_snapshot(&session, id, &snap)?;
        if repo.load_snapshot(id)? != snap {
            return Err(Error::Internal(format!(
                "{} did not read back as written",
                object_name(FileKind::Snapshot, id)
            )));
        }
        crate::failpoint::hit("reencrypt-after-snapshot");
    }
    // 5. Condemn the old packs and keys; a prune deletes them after the grace period.
    let mut packs: Vec<Id> = old.iter().map(|p| p.pack).collect();
    packs.sort();
    let mut keys: Vec<Id> = sessions.iter().copied().collect();
    keys.sort();
    let m = GarbageMark {
        format: crate::format::REPO_FORMAT,
        time: Utc::now(),
        packs,
        segments: vec![],
        sessions: keys,
        unindexed: vec![],
    };
    report.mark = Some(repo.save_mark(&m)?);
    Ok(report)
}

/// The session that sealed a snapshot, from its envelope header alone (no key needed);
/// `None` when the snapshot was deleted meanwhile.
fn sealing_session(repo: &Repository, id: &Id) -> Result<Option<Id>> {
    let name = object_name(FileKind::Snapshot, id);
    // parse_header wants at least a whole empty envelope, which every snapshot is.
    let len = envelope::ENVELOPE_OVERHEAD as u64;
    match repo.store().get_range(FileKind::Snapshot, id, 0, len) {
        Ok(b) => envelope::parse_header(&b)
            .map(|h| Some(h.key_id))
            .map_err(|e| Error::integrity(&name, e)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
