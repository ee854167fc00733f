//! The executor's verify-and-plan-again loop over synthetic surveys with listed copies that do
//! not verify (what a forged segment claims): no plan rests on such a copy.

use std::collections::HashSet;

use chrono::Duration;
use proptest::prelude::*;

use super::*;

/// The copies of `w` that do not verify (unknown to the planners until verified).
fn truth(w: &World) -> HashSet<(PackId, BlobId)> {
    w.bad
        .iter()
        .map(|(p, i)| {
            let blobs = &w.packs[*p].0;
            (id(PACK, *p), id(BLOB, blobs[i % blobs.len()]))
        })
        .collect()
}

/// The executor's loop: plan, verify what the plan relies on against the truth, strike the
/// copies that fail, plan again. Returns the final plan and the survey it was made from.
fn verified<P>(
    mut s: Survey,
    truth: &HashSet<(PackId, BlobId)>,
    plan_of: impl Fn(&Survey) -> P,
    relied: impl Fn(&P) -> Vec<(PackId, BlobId)>,
) -> (P, Survey) {
    loop {
        let plan = plan_of(&s);
        let bad: Vec<_> = relied(&plan)
            .into_iter()
            .filter(|c| truth.contains(c))
            .collect();
        if bad.is_empty() {
            return (plan, s);
        }
        let before = s.bad_copies.len();
        s.bad_copies.extend(bad);
        assert!(
            s.bad_copies.len() > before,
            "a struck copy was relied on again"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_verified_sweep_never_rests_on_a_copy_that_does_not_verify(w in world()) {
        let truth = truth(&w);
        let start = now();
        let due = |_: &MarkId, m: &GarbageMark| m.time <= start - Duration::days(1);
        let (plan, s) = verified(
            survey_of(&w),
            &truth,
            |s| plan_sweep(s, &due, true).unwrap(),
            |p| p.verify.iter().map(|(q, _, e)| (*q, e.id)).collect(),
        );
        // Judged against every bad copy, known to the planner or not.
        let mut judged = s.clone();
        judged.bad_copies = truth;
        check_sweep(&judged, &plan);
    }

    #[test]
    fn a_verified_mark_never_rests_on_a_copy_that_does_not_verify(w in world()) {
        let truth = truth(&w);
        let o = opts(&w);
        let seen: HashSet<PackId> = w.seen_before.iter().map(|p| id(PACK, *p)).collect();
        let (plan, s) = verified(
            survey_of(&w),
            &truth,
            |s| plan_mark(s, &o, &seen, &HashSet::new()).unwrap(),
            |p| p.verify.iter().map(|(q, _, e)| (*q, e.id)).collect(),
        );
        // Repack sources are verified too: no repack copies a bad copy.
        let repacks_bad = plan
            .repack
            .iter()
            .any(|(q, _, blobs)| blobs.iter().any(|b| truth.contains(&(*q, b.id))));
        prop_assert!(!repacks_bad, "{plan:?}");
        let mut judged = s.clone();
        judged.bad_copies = truth;
        check_mark(&judged, &plan, &o);
    }
}

/// The forged-claim attack in miniature: a genuine pack condemned by a due mark, and a junk
/// pack whose listing claims the same blob. The sweep relies on the junk copy, verification
/// strikes it, and the plan made again keeps the genuine pack.
#[test]
fn a_junk_copy_claimed_by_a_forged_listing_keeps_the_genuine_pack() {
    let w = World {
        packs: vec![(vec![1], 0), (vec![1], 1)],
        stored: vec![true, true],
        unindexed: 0,
        segments: vec![(vec![1], false), (vec![0], false)],
        marks: vec![(true, vec![0], vec![], vec![], vec![])],
        referenced: vec![1],
        snapshot_sessions: vec![0],
        keys_old: vec![false; SESSIONS],
        grace_zero: false,
        max_unused: 0.05,
        seen_before: vec![],
        bad: vec![(1, 0)],
    };
    let start = now();
    let due = |_: &MarkId, m: &GarbageMark| m.time <= start - Duration::days(1);
    let naive = plan_sweep(&survey_of(&w), &due, true).unwrap();
    assert_eq!(naive.delete_packs, vec![id::<PackId>(PACK, 0)]);
    assert_eq!(
        naive.verify.len(),
        1,
        "the junk copy is what the deletion rests on"
    );
    let (plan, s) = verified(
        survey_of(&w),
        &truth(&w),
        |s| plan_sweep(s, &due, true).unwrap(),
        |p| p.verify.iter().map(|(q, _, e)| (*q, e.id)).collect(),
    );
    assert!(plan.delete_packs.is_empty(), "{plan:?}");
    assert_eq!(plan.packs_still_needed, 1);
    assert_eq!(s.bad_copies.len(), 1);
}
