//! Checkpoints (provisional index segments, docs/FORMAT.md §6) in prune's mark plan: checked
//! on every synthetic survey of `mark_never_condemns_the_last_copy_of_a_needed_blob`.

use std::collections::HashSet;

use super::*;

/// A pack that only checkpoints (provisional segments) list and that holds no referenced
/// blob is only noted: never condemned before a mark a grace period old noted it, and its
/// segment is not rewritten (losing the flag) while it lists such a pack.
pub(super) fn check_provisional(
    s: &Survey,
    plan: &MarkPlan,
    seen: &HashSet<PackId>,
    o: &PruneOptions,
) {
    if o.grace.is_zero() {
        return;
    }
    let pending: HashSet<PackId> = s
        .marks
        .iter()
        .flat_map(|(_, m)| m.packs.iter().copied())
        .collect();
    let firm: HashSet<PackId> = s
        .segments
        .iter()
        .filter(|(_, g)| !g.provisional)
        .flat_map(|(_, g)| g.packs.iter().map(|p| p.pack))
        .collect();
    // Segments a pending mark supersedes are out of the plan (their packs are listed anew).
    let superseded: HashSet<SegmentId> = s
        .marks
        .iter()
        .flat_map(|(_, m)| m.segments.iter().copied())
        .collect();
    let waiting: HashSet<PackId> = s
        .segments
        .iter()
        .filter(|(id, g)| g.provisional && !superseded.contains(id))
        .flat_map(|(_, g)| g.packs.iter())
        .filter(|p| {
            !firm.contains(&p.pack)
                && !seen.contains(&p.pack)
                && !pending.contains(&p.pack)
                && !p.blobs.iter().any(|b| s.referenced.contains(&b.id))
        })
        .map(|p| p.pack)
        .collect();
    for p in &plan.condemned {
        assert!(
            !waiting.contains(p),
            "a checkpoint's pack {p:?} condemned early: {plan:?}"
        );
    }
    for p in waiting.iter().filter(|p| s.stored.contains_key(p)) {
        assert!(
            plan.unindexed.contains(p),
            "a checkpoint's pack {p:?} not noted: {plan:?}"
        );
    }
    if let Some((rewritten, _)) = &plan.consolidate {
        for (id, g) in s.segments.iter().filter(|(id, _)| rewritten.contains(id)) {
            assert!(
                !g.packs.iter().any(|p| waiting.contains(&p.pack)),
                "checkpoint segment {id:?} rewritten while a pack of it waits: {plan:?}"
            );
        }
    }
}
