//! Re-encryption's decisions, as a pure function of what was read: which sessions to move,
//! which blobs to copy (those no live pack of another session already holds), and which
//! manifests to seal again. Property tests check that every blob of a chosen session keeps a
//! copy outside it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::Target;
use crate::error::{Error, Result};
use crate::format::index::IndexSegment;
use crate::id::{BlobId, PackId, SegmentId, SessionId, SnapshotId};
use crate::pack::BlobEntry;
use crate::repo::marks::Marks;
use crate::repo::prune::plan::pack_table;
use crate::store::{object_name, FileKind};

/// What re-encryption reads before it decides.
#[derive(Debug, Default)]
pub struct ReencryptSurvey {
    /// Session keys with their creation times (`None`: unreadable record).
    pub keys: HashMap<SessionId, Option<DateTime<Utc>>>,
    /// When the survey was made (creation times beyond it are not believed).
    pub now: DateTime<Utc>,
    pub marks: Marks,
    pub stored: HashSet<PackId>,
    pub segments: Vec<(SegmentId, IndexSegment)>,
    /// (snapshot, the session whose key sealed its manifest).
    pub sealed_by: Vec<(SnapshotId, SessionId)>,
}

/// What to copy, seal again and condemn.
#[derive(Debug, Default)]
pub struct ReencryptPlan {
    /// The chosen sessions, sorted.
    pub sessions: Vec<SessionId>,
    /// Their stored packs (condemned once everything is copied), sorted.
    pub old_packs: Vec<PackId>,
    /// Per old pack: (pack, session, the blobs to copy out of it).
    pub copies: Vec<(PackId, SessionId, Vec<BlobEntry>)>,
    pub blobs_copied: usize,
    pub blobs_already_elsewhere: usize,
    /// Manifests sealed by a chosen session.
    pub resealing: Vec<SnapshotId>,
}

pub fn plan_reencrypt(s: &ReencryptSurvey, target: &Target) -> Result<ReencryptPlan> {
    // Two listings of one pack that disagree could hide a blob from the copy: refuse them,
    // as prune does.
    pack_table(&s.segments)?;
    // Sessions that protect something; a running backup's session protects nothing yet and
    // is left alone by --all and --before.
    let in_use: HashSet<SessionId> = s
        .segments
        .iter()
        .flat_map(|(_, seg)| seg.packs.iter())
        .filter(|p| !s.marks.packs.contains(&p.pack))
        .map(|p| p.session)
        .chain(s.sealed_by.iter().map(|(_, sess)| *sess))
        .collect();
    let sessions: HashSet<SessionId> = match target {
        Target::Sessions(ids) => {
            if let Some(missing) = ids.iter().find(|sess| !s.keys.contains_key(sess)) {
                return Err(Error::NotFound(object_name(FileKind::Key, missing)));
            }
            ids.iter().copied().collect()
        }
        // A creation time in the future is no age at all (the record's plaintext was edited,
        // or a writer lied): such a session is treated as old enough.
        Target::Before(t) => s
            .keys
            .iter()
            .filter(|(k, c)| {
                c.is_some_and(|c| c < *t || c > s.now + crate::repo::forget::CLOCK_SKEW)
                    && in_use.contains(k)
            })
            .map(|(k, _)| *k)
            .collect(),
        Target::All => s
            .keys
            .keys()
            .filter(|k| in_use.contains(k))
            .copied()
            .collect(),
    };
    let mut plan = ReencryptPlan {
        sessions: sessions.iter().copied().collect(),
        ..Default::default()
    };
    plan.sessions.sort();
    if sessions.is_empty() {
        return Ok(plan);
    }
    // Blobs that a live pack of another session already holds need no copy.
    let mut elsewhere: HashSet<BlobId> = HashSet::new();
    let mut old = Vec::new();
    let mut seen = HashSet::new();
    for (_, seg) in &s.segments {
        for p in &seg.packs {
            if !s.stored.contains(&p.pack) || !seen.insert(p.pack) {
                continue;
            }
            // A chosen session's packs are copied even when already condemned: a sweep may
            // yet keep a condemned pack that a snapshot turns out to need.
            if sessions.contains(&p.session) {
                old.push(p);
            } else if !s.marks.packs.contains(&p.pack) {
                elsewhere.extend(p.blobs.iter().map(|b| b.id));
            }
        }
    }
    for p in &old {
        let mut todo = Vec::new();
        for b in &p.blobs {
            if elsewhere.contains(&b.id) {
                plan.blobs_already_elsewhere += 1;
            } else if elsewhere.insert(b.id) {
                todo.push(*b);
            }
        }
        plan.blobs_copied += todo.len();
        plan.copies.push((p.pack, p.session, todo));
    }
    plan.old_packs = old.iter().map(|p| p.pack).collect();
    plan.old_packs.sort();
    plan.resealing = s
        .sealed_by
        .iter()
        .filter(|(_, sess)| sessions.contains(sess))
        .map(|(id, _)| *id)
        .collect();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::compress::Compression;
    use crate::format::index::PackEntries;
    use crate::pack::BlobType;

    fn id<T: From<crate::id::Id>>(tag: u8, n: usize) -> T {
        let mut b = [0u8; 32];
        b[0] = tag;
        b[1] = n as u8;
        T::from(crate::id::Id(b))
    }

    fn survey(
        packs: &[(Vec<usize>, usize)],
        stored: &[bool],
        condemned: &[usize],
    ) -> ReencryptSurvey {
        let listing = |(i, (blobs, session)): (usize, &(Vec<usize>, usize))| PackEntries {
            pack: id(2, i),
            session: id(3, *session),
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(slot, b)| BlobEntry {
                    id: id(1, *b),
                    blob_type: BlobType::Data,
                    compression: Compression::None,
                    offset: slot as u32 * 100,
                    length: 100,
                    raw_length: 60,
                })
                .collect(),
        };
        let mut marks = Marks::default();
        marks
            .packs
            .extend(condemned.iter().map(|p| id::<PackId>(2, *p)));
        ReencryptSurvey {
            now: Utc::now(),
            keys: (0..3).map(|s| (id(3, s), None)).collect(),
            marks,
            stored: (0..packs.len())
                .filter(|i| stored[*i])
                .map(|i| id(2, i))
                .collect(),
            segments: vec![(
                id(4, 0),
                IndexSegment {
                    packs: packs.iter().enumerate().map(listing).collect(),
                    provisional: false,
                },
            )],
            sealed_by: vec![],
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Every blob of a chosen session's stored packs keeps a copy outside the chosen
        /// sessions: it is copied, or a live (stored, uncondemned) pack of another session
        /// holds it. Only the chosen sessions' packs are given up.
        #[test]
        fn every_blob_of_a_chosen_session_keeps_a_copy(
            packs in prop::collection::vec(
                (prop::collection::btree_set(0..8usize, 1..4)
                    .prop_map(|s| s.into_iter().collect::<Vec<_>>()), 0..3usize),
                1..8),
            stored_bits in prop::collection::vec(prop::bool::weighted(0.9), 8),
            condemned in prop::collection::vec(0..8usize, 0..3),
            chosen in prop::collection::btree_set(0..3usize, 1..3),
        ) {
            let s = survey(&packs, &stored_bits, &condemned);
            let target = Target::Sessions(chosen.iter().map(|c| id(3, *c)).collect());
            let plan = plan_reencrypt(&s, &target).unwrap();
            let chosen: HashSet<SessionId> = chosen.iter().map(|c| id(3, *c)).collect();
            let copied: HashSet<BlobId> = plan
                .copies
                .iter()
                .flat_map(|(_, _, b)| b.iter().map(|e| e.id))
                .collect();
            let (_, seg) = &s.segments[0];
            for p in seg.packs.iter().filter(|p| s.stored.contains(&p.pack)) {
                if chosen.contains(&p.session) {
                    prop_assert!(plan.old_packs.contains(&p.pack));
                    for b in &p.blobs {
                        let live_elsewhere = seg.packs.iter().any(|q| {
                            !chosen.contains(&q.session)
                                && s.stored.contains(&q.pack)
                                && !s.marks.packs.contains(&q.pack)
                                && q.blobs.iter().any(|e| e.id == b.id)
                        });
                        prop_assert!(copied.contains(&b.id) || live_elsewhere,
                            "blob {:?} of {:?} would be lost", b.id, p.pack);
                    }
                } else {
                    prop_assert!(!plan.old_packs.contains(&p.pack), "another session's pack given up");
                }
            }
            // Each blob is copied once.
            let total: usize = plan.copies.iter().map(|(_, _, b)| b.len()).sum();
            prop_assert_eq!(total, copied.len());
        }
    }

    #[test]
    fn disagreeing_listings_stop_the_plan() {
        let mut s = survey(&[(vec![1, 2], 0)], &[true], &[]);
        let mut forged = s.segments[0].1.packs[0].clone();
        forged.blobs.clear();
        s.segments.push((
            id(4, 1),
            IndexSegment {
                packs: vec![forged],
                provisional: false,
            },
        ));
        let e = plan_reencrypt(&s, &Target::All).unwrap_err();
        assert!(e.is_integrity(), "{e}");
    }
}
