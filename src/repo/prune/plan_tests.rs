//! Property tests of prune's plans over synthetic surveys: random packs, segments that list
//! them (with duplicate listings), packs missing from the store or missing from the index,
//! due and pending marks that condemn anything at all (a writer can forge one), and random
//! sets of referenced blobs. The oracle is a model of the store after the plan ran, written
//! independently of the planner: every referenced blob that had a live, indexed copy before
//! still has one after.

use std::collections::{HashMap, HashSet};

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::plan::{plan_mark, plan_sweep, MarkPlan, SweepPlan};
use super::survey::Survey;
use super::PruneOptions;
use crate::compress::Compression;
use crate::format::garbage::GarbageMark;
use crate::format::index::{IndexSegment, PackEntries};
use crate::id::{BlobId, Id, MarkId, PackId, SegmentId};
use crate::pack::{BlobEntry, BlobType};

/// A synthetic id of any kind: `tag` names the kind, `n` the object.
fn id<T: From<Id>>(tag: u8, n: usize) -> T {
    let mut b = [0u8; 32];
    b[0] = tag;
    b[1] = n as u8;
    T::from(Id(b))
}
const BLOB: u8 = 1;
const PACK: u8 = 2;
const SESSION: u8 = 3;
const SEGMENT: u8 = 4;
const MARK: u8 = 5;

fn entry(blob: usize, slot: usize) -> BlobEntry {
    BlobEntry {
        id: id(BLOB, blob),
        blob_type: BlobType::Data,
        compression: Compression::None,
        offset: (slot * 1000) as u32,
        length: 100 + blob as u32,
        raw_length: 60,
    }
}

/// A mark: due?, packs (unindexed ones numbered after the listed), segments, sessions,
/// unindexed packs noted.
type MarkSpec = (bool, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>);

/// The raw material of a survey, as indexes into small pools so that collisions (a blob in
/// several packs, a pack in several segments) are common.
#[derive(Debug, Clone)]
struct World {
    /// Per pack: its blobs (by number) and its session.
    packs: Vec<(Vec<usize>, usize)>,
    stored: Vec<bool>,
    /// Stored packs no segment lists.
    unindexed: usize,
    /// Per segment: the packs it lists.
    /// Per segment: the packs it lists, and whether it is provisional (a backup's checkpoint).
    segments: Vec<(Vec<usize>, bool)>,
    marks: Vec<MarkSpec>,
    referenced: Vec<usize>,
    snapshot_sessions: Vec<usize>,
    /// Per session: key old enough to condemn?
    keys_old: Vec<bool>,
    grace_zero: bool,
    max_unused: f64,
    seen_before: Vec<usize>,
    /// Listed copies that do not verify, as (pack, index into its blobs): what a forged
    /// segment claims.
    bad: Vec<(usize, usize)>,
}

const BLOBS: usize = 10;
const SESSIONS: usize = 3;

fn world() -> impl Strategy<Value = World> {
    let packs = prop::collection::vec(
        (
            prop::collection::btree_set(0..BLOBS, 1..5).prop_map(|s| s.into_iter().collect()),
            0..SESSIONS,
        ),
        1..8,
    );
    (packs, 0..3usize).prop_flat_map(|(packs, unindexed)| {
        let n = packs.len();
        let all = n + unindexed;
        (
            Just(packs),
            prop::collection::vec(prop::bool::weighted(0.85), n),
            Just(unindexed),
            prop::collection::vec(
                (
                    prop::collection::vec(0..n, 0..5),
                    prop::bool::weighted(0.25),
                ),
                0..5,
            ),
            prop::collection::vec(
                (
                    any::<bool>(),
                    prop::collection::vec(0..all, 0..4),
                    prop::collection::vec(0..5usize, 0..3),
                    prop::collection::vec(0..SESSIONS, 0..2),
                    prop::collection::vec(0..all, 0..2),
                ),
                0..3,
            ),
            prop::collection::vec(0..BLOBS, 0..BLOBS),
            prop::collection::vec(0..SESSIONS, 0..2),
            prop::collection::vec(any::<bool>(), SESSIONS),
            any::<bool>(),
            prop::sample::select(vec![0.0, 0.05, 1.0]),
            prop::collection::vec(0..all, 0..2),
            prop::collection::vec((0..n, 0..4usize), 0..4),
        )
            .prop_map(
                |(
                    packs,
                    stored,
                    unindexed,
                    segments,
                    marks,
                    referenced,
                    snapshot_sessions,
                    keys_old,
                    grace_zero,
                    max_unused,
                    seen_before,
                    bad,
                )| World {
                    packs,
                    stored,
                    unindexed,
                    segments,
                    marks,
                    referenced,
                    snapshot_sessions,
                    keys_old,
                    grace_zero,
                    max_unused,
                    seen_before,
                    bad,
                },
            )
    })
}

fn listing(w: &World, p: usize) -> PackEntries {
    let (blobs, session) = &w.packs[p];
    PackEntries {
        pack: id(PACK, p),
        session: id(SESSION, *session),
        blobs: blobs
            .iter()
            .enumerate()
            .map(|(slot, b)| entry(*b, slot))
            .collect(),
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

fn survey_of(w: &World) -> Survey {
    let start = now();
    let mut stored = HashMap::new();
    for (p, s) in w.stored.iter().enumerate() {
        if *s {
            stored.insert(id(PACK, p), 1000 + p as u64);
        }
    }
    for u in 0..w.unindexed {
        stored.insert(id(PACK, w.packs.len() + u), 500);
    }
    let segments: Vec<(SegmentId, IndexSegment)> = w
        .segments
        .iter()
        .enumerate()
        .map(|(i, (ps, provisional))| {
            let mut seen = HashSet::new();
            let packs = ps
                .iter()
                .filter(|p| seen.insert(**p))
                .map(|p| listing(w, *p))
                .collect();
            (
                id(SEGMENT, i),
                IndexSegment {
                    packs,
                    provisional: *provisional,
                },
            )
        })
        .collect();
    let marks = w
        .marks
        .iter()
        .enumerate()
        .map(|(i, (due, packs, segs, sessions, unindexed))| {
            let time = if *due {
                start - Duration::days(3)
            } else {
                start - Duration::minutes(5)
            };
            let m = GarbageMark {
                format: crate::format::REPO_FORMAT,
                time,
                packs: packs.iter().map(|p| id(PACK, *p)).collect(),
                segments: segs.iter().map(|s| id(SEGMENT, *s)).collect(),
                sessions: sessions.iter().map(|s| id(SESSION, *s)).collect(),
                unindexed: unindexed.iter().map(|p| id(PACK, *p)).collect(),
            };
            (id(MARK, i), m)
        })
        .collect();
    let keys = w
        .keys_old
        .iter()
        .enumerate()
        .map(|(s, old)| {
            let created = if *old {
                start - Duration::days(10)
            } else {
                start - Duration::minutes(1)
            };
            (id(SESSION, s), Some(created))
        })
        .collect();
    // Every listing vouched for, as in an unsigned repository (writers' claims are tested
    // apart, in `unvouched_claims_are_verified_before_consolidation`).
    let vouched = segments
        .iter()
        .flat_map(|(_, seg): &(SegmentId, IndexSegment)| seg.packs.iter().map(|p| p.pack))
        .collect::<HashSet<PackId>>();
    Survey {
        start,
        marks,
        segments,
        vouched,
        stored,
        keys,
        referenced: w.referenced.iter().map(|b| id(BLOB, *b)).collect(),
        snapshot_sessions: w
            .snapshot_sessions
            .iter()
            .map(|s| id(SESSION, *s))
            .collect(),
        snapshots: 1,
        bad_copies: HashSet::new(),
    }
}

fn opts(w: &World) -> PruneOptions {
    PruneOptions {
        grace: if w.grace_zero {
            Duration::zero()
        } else {
            Duration::days(1)
        },
        max_unused: w.max_unused,
        dry_run: false,
    }
}

/// The model of a repository: which packs are stored, and the listings of the index.
struct Model {
    stored: HashSet<PackId>,
    listings: Vec<PackEntries>,
    /// Listed copies that do not verify: no copy at all.
    bad: HashSet<(PackId, BlobId)>,
}

impl Model {
    fn of(s: &Survey) -> Model {
        Model {
            stored: s.stored.keys().copied().collect(),
            listings: s
                .segments
                .iter()
                .flat_map(|(_, seg)| seg.packs.iter().cloned())
                .collect(),
            bad: s.bad_copies.clone(),
        }
    }

    /// Packs (stored and indexed, outside `condemned`) that hold `blob`.
    fn holders(&self, blob: &BlobId, condemned: &HashSet<PackId>) -> Vec<PackId> {
        self.listings
            .iter()
            .filter(|p| self.stored.contains(&p.pack) && !condemned.contains(&p.pack))
            .filter(|p| p.blobs.iter().any(|b| b.id == *blob))
            .filter(|p| !self.bad.contains(&(p.pack, *blob)))
            .map(|p| p.pack)
            .collect()
    }
}

fn model_after_sweep(s: &Survey, plan: &SweepPlan) -> Model {
    let deleted: HashSet<PackId> = plan.delete_packs.iter().copied().collect();
    let gone: HashSet<SegmentId> = plan.delete_segments.iter().copied().collect();
    let mut listings: Vec<PackEntries> = s
        .segments
        .iter()
        .filter(|(id, _)| !gone.contains(id))
        .flat_map(|(_, seg)| seg.packs.iter().cloned())
        .collect();
    listings.extend(plan.relist.iter().cloned());
    Model {
        stored: s
            .stored
            .keys()
            .filter(|p| !deleted.contains(p))
            .copied()
            .collect(),
        listings,
        bad: s.bad_copies.clone(),
    }
}

fn check_sweep(s: &Survey, plan: &SweepPlan) {
    let before = Model::of(s);
    let after = model_after_sweep(s, plan);
    let none = HashSet::new();
    for b in &s.referenced {
        if !before.holders(b, &none).is_empty() {
            assert!(
                !after.holders(b, &none).is_empty(),
                "referenced blob {b:?} lost its last indexed copy: {plan:?}"
            );
        }
    }
    // Nothing outside the due marks is deleted.
    let due: Vec<&GarbageMark> = s
        .marks
        .iter()
        .filter(|(id, _)| plan.marks_due.contains(id))
        .map(|(_, m)| m)
        .collect();
    for p in &plan.delete_packs {
        assert!(
            due.iter().any(|m| m.packs.contains(p)),
            "{p:?} not condemned"
        );
    }
    for k in &plan.delete_keys {
        assert!(due.iter().any(|m| m.sessions.contains(k)));
        assert!(!s.snapshot_sessions.contains(k), "a snapshot's key deleted");
        assert!(
            !after
                .listings
                .iter()
                .any(|p| p.session == *k && after.stored.contains(&p.pack)),
            "the key of a pack that stays was deleted"
        );
    }
    // No segment that stays names a deleted pack.
    for p in &after.listings {
        assert!(!plan.delete_packs.contains(&p.pack));
    }
}

fn check_mark(s: &Survey, plan: &MarkPlan, o: &PruneOptions) {
    let pending: HashSet<PackId> = s
        .marks
        .iter()
        .flat_map(|(_, m)| m.packs.iter().copied())
        .collect();
    let mut condemned = pending.clone();
    condemned.extend(plan.condemned.iter().copied());
    let before = Model::of(s);
    // After: the rewritten segments are replaced by the kept listings, and the repacked
    // blobs live in new packs that nothing condemns.
    let mut after = Model::of(s);
    let mut copied: HashSet<BlobId> = HashSet::new();
    for (_, _, blobs) in &plan.repack {
        copied.extend(blobs.iter().map(|b| b.id));
    }
    if let Some((rewritten, keep)) = &plan.consolidate {
        after.listings = s
            .segments
            .iter()
            .filter(|(id, _)| !rewritten.contains(id))
            .flat_map(|(_, seg)| seg.packs.iter().cloned())
            .chain(keep.iter().cloned())
            .collect();
    } else {
        assert!(plan.repack.is_empty(), "repacked copies must be indexed");
    }
    for b in &s.referenced {
        if !before.holders(b, &pending).is_empty() {
            assert!(
                copied.contains(b) || !after.holders(b, &condemned).is_empty(),
                "referenced blob {b:?} left without a live copy: {plan:?}"
            );
        }
    }
    for k in &plan.sessions {
        assert!(
            !s.snapshot_sessions.contains(k),
            "a snapshot's key condemned"
        );
        let created = s.keys.iter().find(|(id, _)| id == k).and_then(|(_, c)| *c);
        assert!(created.is_some_and(|c| c <= s.start - o.grace));
    }
    // A pack is condemned only when unused, repacked or unindexed.
    for p in &plan.condemned {
        let listed = s
            .segments
            .iter()
            .any(|(_, seg)| seg.packs.iter().any(|q| q.pack == *p));
        let repacked = plan.repack.iter().any(|(q, _, _)| q == p);
        let holds_needed_only_here = s.referenced.iter().any(|b| {
            let h = before.holders(b, &pending);
            h.len() == 1 && h[0] == *p
        });
        assert!(
            !listed || repacked || !holds_needed_only_here,
            "{p:?} condemned while it holds the only copy of a needed blob"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sweep_never_deletes_the_last_copy_of_a_needed_blob(w in world()) {
        let s = survey_of(&w);
        let start = s.start;
        let due = |_: &MarkId, m: &GarbageMark| m.time <= start - Duration::days(1);
        let plan = plan_sweep(&s, &due, true).unwrap();
        check_sweep(&s, &plan);
    }

    #[test]
    fn mark_never_condemns_the_last_copy_of_a_needed_blob(w in world()) {
        let s = survey_of(&w);
        let o = opts(&w);
        let seen: HashSet<PackId> = w.seen_before.iter().map(|p| id(PACK, *p)).collect();
        let plan = plan_mark(&s, &o, &seen, &HashSet::new()).unwrap();
        check_mark(&s, &plan, &o);
        provisional::check_provisional(&s, &plan, &seen, &o);
    }

    #[test]
    fn sweep_then_mark_keeps_every_needed_blob(w in world()) {
        // The full run: sweep, then mark on what the sweep left, then sweep that mark.
        let s = survey_of(&w);
        let start = s.start;
        let due = |_: &MarkId, m: &GarbageMark| m.time <= start - Duration::days(1);
        let sweep = plan_sweep(&s, &due, true).unwrap();
        let after = model_after_sweep(&s, &sweep);
        let mut s2 = s.clone();
        s2.marks.retain(|(id, _)| !sweep.marks_due.contains(id));
        s2.stored.retain(|p, _| after.stored.contains(p));
        s2.segments.retain(|(id, _)| !sweep.delete_segments.contains(id));
        if !sweep.relist.is_empty() {
            s2.segments.push((id(SEGMENT, 200), IndexSegment { packs: sweep.relist.clone(), provisional: false }));
        }
        let o = opts(&w);
        let plan = plan_mark(&s2, &o, &HashSet::new(), &HashSet::new()).unwrap();
        check_mark(&s2, &plan, &o);
    }

    #[test]
    fn disagreeing_listings_stop_both_plans(w in world(), drop_first in any::<bool>()) {
        let mut s = survey_of(&w);
        let Some(p) = s.segments.iter().flat_map(|(_, seg)| seg.packs.first()).next().cloned()
        else {
            return Ok(());
        };
        // A second listing of the same pack that leaves out a blob or claims another session.
        let mut forged = p.clone();
        if drop_first {
            forged.blobs.remove(0);
        } else {
            forged.session = id(SESSION, 99);
        }
        s.segments.insert(0, (id(SEGMENT, 100), IndexSegment { packs: vec![forged], provisional: false }));
        let start = s.start;
        let due = |_: &MarkId, m: &GarbageMark| m.time <= start - Duration::days(1);
        let e = plan_sweep(&s, &due, true).unwrap_err();
        prop_assert!(e.is_integrity() && e.to_string().contains("differently"), "{}", e);
        let e = plan_mark(&s, &opts(&w), &HashSet::new(), &HashSet::new()).unwrap_err();
        prop_assert!(e.is_integrity(), "{}", e);
    }
}

#[test]
fn identical_duplicate_listings_are_accepted() {
    let p = PackEntries {
        pack: id(PACK, 1),
        session: id(SESSION, 1),
        blobs: vec![entry(1, 0), entry(2, 1)],
    };
    let mut reordered = p.clone();
    reordered.blobs.reverse();
    let segs = vec![
        (
            id(SEGMENT, 1),
            IndexSegment {
                packs: vec![p],
                provisional: false,
            },
        ),
        (
            id(SEGMENT, 2),
            IndexSegment {
                packs: vec![reordered],
                provisional: false,
            },
        ),
    ];
    assert_eq!(super::plan::pack_table(&segs).unwrap().len(), 1);
}

proptest! {
    /// Where no listing is vouched for (every segment a writer's), consolidation relies on
    /// every entry it lists again under the owner's signature, so the executor verifies each
    /// one first; a segment with an entry already found bad is not rewritten at all.
    #[test]
    fn unvouched_claims_are_verified_before_consolidation(w in world()) {
        let mut s = survey_of(&w);
        s.vouched.clear();
        let Ok(plan) = plan_mark(&s, &opts(&w), &HashSet::new(), &HashSet::new()) else {
            return Ok(());
        };
        let Some((rewrite, keep)) = &plan.consolidate else {
            return Ok(());
        };
        let verify: HashSet<(PackId, BlobId)> =
            plan.verify.iter().map(|(p, _, e)| (*p, e.id)).collect();
        for p in keep {
            for b in &p.blobs {
                prop_assert!(verify.contains(&(p.pack, b.id)), "{:?} not verified", b.id);
                prop_assert!(!s.bad_copies.contains(&(p.pack, b.id)));
            }
        }
        for id in rewrite {
            let seg = &s.segments.iter().find(|(i, _)| i == id).unwrap().1;
            for p in &seg.packs {
                prop_assert!(p.blobs.iter().all(|b| !s.bad_copies.contains(&(p.pack, b.id))));
            }
        }
    }
}

mod provisional;
mod verified;
