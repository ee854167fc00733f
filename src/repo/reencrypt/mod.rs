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

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

mod plan;

pub use plan::{plan_reencrypt, ReencryptPlan, ReencryptSurvey};

use crate::crypto::envelope;
use crate::error::{Error, Result};
use crate::format::garbage::GarbageMark;
use crate::format::index::IndexSegment;
use crate::id::{MarkId, SessionId, SnapshotId};
use crate::repo::activity::Activity;
use crate::repo::marks::Marks;
use crate::repo::repack::Repacker;
use crate::repo::Repository;
use crate::store::{object_name, FileKind};

/// Which sessions to re-encrypt.
#[derive(Debug, Clone)]
pub enum Target {
    Sessions(Vec<SessionId>),
    /// Sessions whose key was made before this time.
    Before(DateTime<Utc>),
    All,
}

/// `rotate reencrypt --json`.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct ReencryptReport {
    pub dry_run: bool,
    pub sessions: Vec<SessionId>,
    pub new_session: Option<SessionId>,
    pub packs: usize,
    pub blobs_copied: usize,
    pub blobs_already_elsewhere: usize,
    pub bytes_written: u64,
    pub snapshots_resealed: usize,
    pub mark: Option<MarkId>,
    /// With `--delete-now`: the sweep of that mark that followed.
    pub sweep: Option<crate::repo::prune::SweepReport>,
}

impl std::fmt::Display for ReencryptReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} session(s): {}rewrite {} pack(s) ({} blob(s) copied, {} already stored elsewhere, {} written) and reseal {} snapshot(s)",
            self.sessions.len(),
            if self.dry_run { "would " } else { "" },
            self.packs,
            self.blobs_copied,
            self.blobs_already_elsewhere,
            crate::human::bytes(self.bytes_written),
            self.snapshots_resealed
        )?;
        if let Some(m) = &self.mark {
            write!(
                f,
                "\ngarbage/{} condemns the old packs and wrapped keys{}",
                m.short(),
                match &self.sweep {
                    Some(s) => format!(
                        "; deleted {} old pack(s); a prune after the grace period deletes the old keys",
                        s.packs_deleted
                    ),
                    None => ": a prune after the grace period deletes them".into(),
                }
            )?;
        }
        Ok(())
    }
}

pub fn reencrypt(
    repo: &Repository,
    target: &Target,
    dry_run: bool,
    act: &Activity,
) -> Result<ReencryptReport> {
    repo.require_owner("rotate reencrypt")?;
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
    let s = survey(repo, lock)?;
    let plan = plan::plan_reencrypt(&s, target)?;
    let mut report = ReencryptReport {
        dry_run,
        sessions: plan.sessions.clone(),
        packs: plan.old_packs.len(),
        blobs_copied: plan.blobs_copied,
        blobs_already_elsewhere: plan.blobs_already_elsewhere,
        snapshots_resealed: plan.resealing.len(),
        ..Default::default()
    };
    if plan.sessions.is_empty() || dry_run {
        return Ok(report);
    }
    execute(repo, &s, plan, &mut report, lock, act)?;
    Ok(report)
}

/// Reads what the plan needs: keys and their ages, marks, packs, index, and which session
/// sealed each manifest (from its envelope header: no key needed).
fn survey(repo: &Repository, lock: &mut Option<super::lock::Lock<'_>>) -> Result<ReencryptSurvey> {
    let marks = Marks::of(&repo.load_marks()?);
    let stored = repo.stored_packs()?.into_keys().collect();
    let snapshot_ids = repo.snapshot_ids()?;
    let segments = repo.load_segments()?;
    let mut sealed_by = Vec::new();
    for id in &snapshot_ids {
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
        if let Some(session) = sealing_session(repo, id)? {
            sealed_by.push((*id, session));
        }
    }
    let keys = session_ages(repo, &sealed_by)?;
    Ok(ReencryptSurvey {
        now: Utc::now(),
        keys,
        marks,
        stored,
        segments,
        sealed_by,
    })
}

/// Each session's age as far as it is authenticated (docs/FORMAT.md §14c, §17.4). In a signed
/// repository a writer's signature on a key record counts from any enrolled writer, so a
/// writer's session is dated by the earliest manifest sealed under that session's own key
/// (which no other writer can make), and one without a manifest counts as old; the owner's
/// records keep their signed `created`. Unsigned (legacy) repositories use the records.
fn session_ages(repo: &Repository, sealed_by: &[(SnapshotId, SessionId)]) -> Result<SessionAges> {
    let records = super::check::wrapped_keys(repo)?;
    let Some(owner) = repo.roster().map(|r| r.owner) else {
        return Ok(records
            .into_iter()
            .map(|(id, r)| (id, r.map(|r| repo.authenticated_created(&r))))
            .collect());
    };
    let mut manifest_time: std::collections::HashMap<SessionId, chrono::DateTime<Utc>> =
        std::collections::HashMap::new();
    for (id, session) in sealed_by {
        match repo.load_snapshot(id) {
            Ok(s) if s.session == *session => {
                let t = manifest_time.entry(*session).or_insert(s.time);
                *t = (*t).min(s.time);
            }
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) if e.is_key_service() && !matches!(e, Error::KeyDenied { .. }) => return Err(e),
            // A manifest that does not open dates nothing: its session counts as old.
            Err(_) => {}
        }
    }
    Ok(records
        .into_iter()
        .map(|(id, r)| {
            let age = r.map(|r| {
                if r.signer() == Some(owner) {
                    r.created
                } else {
                    manifest_time
                        .get(&id)
                        .copied()
                        .unwrap_or(chrono::DateTime::UNIX_EPOCH)
                }
            });
            (id, age)
        })
        .collect())
}

/// Each session's authenticated age (`None`: its record does not parse).
pub type SessionAges = std::collections::HashMap<SessionId, Option<chrono::DateTime<Utc>>>;

impl Repository {
    /// Every session's age as `rotate reencrypt --before` takes it (see [`session_ages`]):
    /// for `rotate rewrap --older-than` run by a key holder.
    pub fn authenticated_session_ages(&self) -> Result<SessionAges> {
        let mut sealed_by = Vec::new();
        for id in self.snapshot_ids()? {
            if let Some(session) = sealing_session(self, &id)? {
                sealed_by.push((id, session));
            }
        }
        session_ages(self, &sealed_by)
    }
}

/// Carries a plan out: copy, verify the copies, index them, seal the manifests again, and
/// only then condemn the old packs and keys.
fn execute(
    repo: &Repository,
    s: &ReencryptSurvey,
    plan: ReencryptPlan,
    report: &mut ReencryptReport,
    lock: &mut Option<super::lock::Lock<'_>>,
    act: &Activity,
) -> Result<()> {
    let sessions: HashSet<SessionId> = plan.sessions.iter().copied().collect();
    let copies = &plan.copies;
    // 1. Copy, then 2. read every new pack back before anything old is given up.
    let mut rp = Repacker::new(repo)?;
    let new_session = rp
        .session()
        .map(|s| s.id)
        .ok_or_else(|| Error::Internal("a re-encryption has one new session".into()))?;
    report.new_session = Some(new_session);
    for (n, (pack, session, todo)) in copies.iter().enumerate() {
        act.set(format!("copying pack {}/{}", n + 1, copies.len()));
        rp.copy(pack, session, todo)?;
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
    }
    let (made, written, bytes) = rp.finish()?;
    let session = made
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("a re-encryption has one new session".into()))?;
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
        repo.save_index_segment(&IndexSegment {
            packs: written,
            provisional: false,
        })?;
    }
    crate::failpoint::hit("reencrypt-after-index");
    // 4. Seal the manifests again under the new session, verify, replace.
    // A backup of a chosen session may have committed a snapshot after the listing: the
    // snapshots are listed once more when the first list is done.
    let known: HashSet<SnapshotId> = s.sealed_by.iter().map(|(id, _)| *id).collect();
    let mut todo: std::collections::VecDeque<SnapshotId> = plan.resealing.into();
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
        // Forgotten meanwhile: leave it forgotten. One signed by no one the owner accepts
        // (under a session a writer started) is not carried over: it protects nothing.
        match repo.load_snapshot(id) {
            Ok(_) => {}
            Err(Error::NotFound(_)) => continue,
            Err(e) if e.is_untrusted() => {
                tracing::warn!("not resealed: {e}");
                continue;
            }
            Err(e) => return Err(e),
        }
        // Narrows (without conditional writes it cannot close) the window in which a
        // concurrent `forget` is undone by the replacement.
        if let Err(Error::NotFound(_)) = repo.store().size(FileKind::Snapshot, id) {
            continue;
        }
        let snap = repo.reseal_snapshot(&session, id)?;
        if snap.session != new_session || repo.load_snapshot(id)? != snap {
            return Err(Error::Internal(format!(
                "{} did not read back as written",
                object_name(FileKind::Snapshot, id)
            )));
        }
        crate::failpoint::hit("reencrypt-after-snapshot");
    }
    // 5. Condemn the old packs and keys; a prune deletes them after the grace period.
    let m = GarbageMark {
        format: crate::format::REPO_FORMAT,
        time: Utc::now(),
        packs: plan.old_packs,
        segments: vec![],
        sessions: plan.sessions,
        unindexed: vec![],
    };
    report.mark = Some(repo.save_mark(&m)?);
    Ok(())
}

/// The session that sealed a snapshot, from its envelope header alone (no key needed);
/// `None` when the snapshot was deleted meanwhile.
fn sealing_session(repo: &Repository, id: &SnapshotId) -> Result<Option<SessionId>> {
    let name = object_name(FileKind::Snapshot, id);
    // parse_header wants at least a whole empty envelope, which every snapshot is.
    let len = envelope::ENVELOPE_OVERHEAD as u64;
    match repo.store().get_range(FileKind::Snapshot, id, 0, len) {
        Ok(b) => envelope::parse_header(&b)
            .map(|h| Some(SessionId(h.key_id)))
            .map_err(|e| Error::integrity(&name, e)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
