//! Object Lock retention (docs/FORMAT.md §21): the owner-signed `retention` record that tells
//! every client what to ask for on each write, and `retention extend`, which keeps the data
//! of the last N days of snapshots locked however old the objects holding it are.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::objects::SealedObject;
use super::walk::{TreeWalker, Visits};
use super::Repository;
use crate::crypto::envelope::ObjectKind;
use crate::error::{Error, Result};
use crate::format::retention::RetentionRecord;
use crate::format::tree::NodeKind;
use crate::format::{check_format, from_json, padded_json, DecodeError};
use crate::id::{BlobId, Id, RootId};
use crate::store::object_lock::ObjectLock;
use crate::store::{object_name, FileKind};

impl SealedObject for RetentionRecord {
    type Id = RootId;
    const FILE: FileKind = FileKind::Retention;
    const KIND: ObjectKind = ObjectKind::Retention;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 1024)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let r: RetentionRecord = from_json("retention record", plain)?;
        check_format("retention record", r.format)?;
        Ok(r)
    }
}

/// What `retention extend` did (or would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtendReport {
    pub dry_run: bool,
    pub days: u32,
    /// Snapshots younger than the period, whose data is kept locked.
    pub snapshots: usize,
    /// Objects whose retention was read (one HEAD each), and those extended (one
    /// PutObjectRetention each).
    pub objects_checked: usize,
    pub objects_extended: usize,
    /// Per kind of object (`data`, `index`, `keys`, ...): how many were extended.
    pub extended_by_kind: BTreeMap<String, usize>,
    /// The latest retain-until date set.
    pub latest_until: Option<DateTime<Utc>>,
    /// What could not be covered: manifests or folder listings that do not open (their data
    /// is extended as far as it was reached), and needed objects missing from the store
    /// (`repair undelete` may bring them back). Everything else was extended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl fmt::Display for ExtendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} snapshot(s) of the last {} day(s): {} object(s) checked, {} {}extended",
            self.snapshots,
            self.days,
            self.objects_checked,
            self.objects_extended,
            if self.dry_run { "would be " } else { "" }
        )?;
        if !self.extended_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .extended_by_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        if let Some(t) = self.latest_until {
            write!(
                f,
                "; locked until {} at the latest",
                crate::human::local_time(t)
            )?;
        }
        for p in &self.problems {
            write!(f, "\nnot covered: {p}")?;
        }
        Ok(())
    }
}

type Needs = HashMap<(FileKind, Id), DateTime<Utc>>;

/// Retention requests `retention extend` keeps in flight.
const EXTEND_REQUESTS: usize = 16;

/// What one object needed.
enum Step {
    Missing,
    Enough,
    Extended(DateTime<Utc>),
}

/// Records that `(kind, id)` must stay locked until at least `until`.
fn want(need: &mut Needs, kind: FileKind, id: Id, until: DateTime<Utc>) {
    let e = need.entry((kind, id)).or_insert(until);
    *e = (*e).max(until);
}

impl Repository {
    fn lock_store(&self) -> Option<&dyn ObjectLock> {
        self.store().inner().object_lock()
    }

    /// Reads the retention record (only the owner's is accepted) and has every later write
    /// ask for it. `None` where the store has no Object Lock or no record was set.
    pub fn load_retention(&self) -> Result<Option<RetentionRecord>> {
        let Some(lock) = self.lock_store() else {
            return Ok(None);
        };
        match self.load_object::<RetentionRecord>(&RootId::default()) {
            Ok(r) => {
                lock.configure(Some(r.settings()));
                Ok(Some(r))
            }
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records new retention settings (the owner) and applies them from now on; the bucket's
    /// default retention follows when `bucket_default`.
    pub fn set_retention(&self, r: &RetentionRecord, bucket_default: bool) -> Result<()> {
        self.require_owner("setting the retention")?;
        let lock = self.lock_store().ok_or_else(|| {
            Error::invalid(format!(
                "{} has no Object Lock: retention needs an S3 bucket made with it",
                self.store().location()
            ))
        })?;
        lock.configure(Some(r.settings()));
        self.save_object(&RootId::default(), r)?;
        if bucket_default {
            // Each write asks for its own retention anyway: a bucket whose default cannot be
            // changed here (a role without s3:PutBucketObjectLockConfiguration) is warned of.
            if let Err(e) = self.block_on(lock.set_default_retention(r.mode, r.days)) {
                tracing::warn!(
                    "the bucket's default retention was not changed ({e}); every object custody \
                     writes still asks for {} days itself",
                    r.days
                );
            }
        }
        Ok(())
    }

    /// Extends the retention of everything the snapshots of the last `days` days need, so
    /// that each stays restorable from locked objects alone for `days` after its time: its
    /// manifest and reach, the packs holding its trees and chunks, the index segments listing
    /// them, the session key records, and the repository's own records. An object is extended
    /// to a quarter period past what it needs (so one reused every day is extended about
    /// four times a period, not daily).
    pub fn extend_retention(&self, dry_run: bool) -> Result<ExtendReport> {
        let record = self
            .load_retention()?
            .filter(|r| r.days > 0)
            .ok_or_else(|| {
                Error::invalid("no retention is set for this repository (`custody retention set`)")
            })?;
        let period = Duration::days(i64::from(record.days));
        let margin = Duration::days(i64::from((record.days / 4).max(1)));
        let now = Utc::now();
        let index = self.load_index()?;
        // A manifest that does not open stops nothing: anyone who can write to the bucket
        // could plant one, and every other snapshot's data must still be extended.
        let (mut snaps, unreadable) = self.list_readable_snapshots()?;
        let mut problems: Vec<String> = unreadable.iter().map(|e| e.to_string()).collect();
        // A snapshot dated in the future (a clock running ahead, or a forgery) counts as
        // made now: nothing is locked for longer than a period from now.
        let latest = now + super::forget::CLOCK_SKEW;
        for (_, s) in snaps.iter_mut() {
            s.time = s.time.min(latest);
        }
        snaps.retain(|(_, s)| s.time + period > now);
        // Newest first: a tree met again in an older snapshot needs no later date.
        snaps.sort_by_key(|(_, s)| std::cmp::Reverse(s.time));
        let mut need: Needs = HashMap::new();
        let mut walker = TreeWalker::new(self, &index, Visits::Once);
        for (id, snap) in &snaps {
            let until = snap.time + period;
            want(&mut need, FileKind::Snapshot, **id, until);
            want(&mut need, FileKind::Reach, **id, until);
            want(&mut need, FileKind::Key, *snap.session, until);
            let mut blobs: Vec<BlobId> = Vec::new();
            walker.walk(vec![(snap.tree, ())], |tid, _, tree, next| {
                blobs.push((*tid).into());
                let tree = match tree {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(format!("snapshot {}: {e}", id.short()));
                        return Ok(());
                    }
                };
                for n in tree.nodes {
                    match n.kind {
                        NodeKind::Dir => next.extend(n.subtree.map(|s| (s, ()))),
                        _ => blobs.extend(n.content.iter().map(BlobId::from)),
                    }
                }
                Ok(())
            })?;
            for b in blobs {
                for l in index.locations(b) {
                    want(&mut need, FileKind::Pack, *l.pack, until);
                    want(&mut need, FileKind::Key, *l.session, until);
                }
            }
        }
        let pack_until: HashMap<Id, DateTime<Utc>> = need
            .iter()
            .filter(|((k, _), _)| *k == FileKind::Pack)
            .map(|((_, id), t)| (*id, *t))
            .collect();
        for (seg_id, seg) in self.load_segments()? {
            if let Some(t) = seg
                .packs
                .iter()
                .filter_map(|p| pack_until.get(&*p.pack))
                .max()
            {
                want(&mut need, FileKind::Index, *seg_id, *t);
            }
        }
        // The records every reader needs, for as long as the newest snapshot needs its data.
        if let Some(latest) = need.values().max().copied() {
            for kind in [
                FileKind::Config,
                FileKind::Owner,
                FileKind::Policy,
                FileKind::Retention,
            ] {
                want(&mut need, kind, Id::default(), latest);
            }
            for kind in [FileKind::Writer, FileKind::Revocation, FileKind::History] {
                for (id, _) in self.store().list(kind)? {
                    want(&mut need, kind, id, latest);
                }
            }
        }
        let mut report = ExtendReport {
            dry_run,
            days: record.days,
            snapshots: snaps.len(),
            ..ExtendReport::default()
        };
        // One HEAD (and at most one PutObjectRetention) per object, EXTEND_REQUESTS at once: a
        // large repository's run is bounded by round trips, not by this machine.
        let store = self.store().inner().clone();
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(EXTEND_REQUESTS));
        let mut tasks = tokio::task::JoinSet::new();
        {
            // Spawned onto the runtime; waited for below from this (plain) thread.
            let _in_runtime = self.runtime().enter();
            for ((kind, id), until) in need {
                let (store, slots) = (store.clone(), slots.clone());
                tasks.spawn(async move {
                    let _permit = slots.acquire_owned().await;
                    let lock = store
                        .object_lock()
                        .ok_or_else(|| Error::invalid("no Object Lock here"))?;
                    let outcome = match lock.retain_until(kind, &id).await {
                        Ok(c) if c.is_some_and(|c| c >= until) => Step::Enough,
                        Ok(_) => {
                            let to = until + margin;
                            if !dry_run {
                                lock.extend_retention(kind, &id, to).await?;
                            }
                            Step::Extended(to)
                        }
                        Err(Error::NotFound(_)) => Step::Missing,
                        Err(e) => return Err(e),
                    };
                    Ok((kind, id, outcome))
                });
            }
        }
        let results = self.block_on(async {
            let mut out = Vec::new();
            while let Some(r) = tasks.join_next().await {
                out.push(r.map_err(|e| Error::Internal(format!("retention task: {e}")))??);
            }
            Ok::<_, Error>(out)
        })?;
        for (kind, id, outcome) in results {
            match outcome {
                // Optional records may not exist; anything else needed is reported.
                Step::Missing => {
                    if !matches!(
                        kind,
                        FileKind::Policy | FileKind::Reach | FileKind::Retention
                    ) {
                        problems.push(format!(
                            "{} is missing (deleted? `custody repair undelete` may bring it back)",
                            object_name(kind, &id)
                        ));
                    }
                }
                Step::Enough => report.objects_checked += 1,
                Step::Extended(to) => {
                    report.objects_checked += 1;
                    report.objects_extended += 1;
                    let name = match kind.dir() {
                        "" => object_name(kind, &id),
                        d => d.to_string(),
                    };
                    *report.extended_by_kind.entry(name).or_default() += 1;
                    report.latest_until = report.latest_until.max(Some(to));
                }
            }
        }
        problems.sort();
        report.problems = problems;
        tracing::info!(
            checked = report.objects_checked,
            extended = report.objects_extended,
            "retention extended"
        );
        Ok(report)
    }
}
