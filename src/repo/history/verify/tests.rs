use super::*;
use crate::id::Id;

fn sid(n: u8) -> SnapshotId {
    SnapshotId(Id([n; 32]))
}

const W: SignerId = SignerId(Id([0xaa; 32]));
const C: ChainId = ChainId(Id([0xcc; 32]));

/// Snapshots 1..=n of one chain, each following the one before.
fn chain(n: u8) -> Vec<Entry> {
    (1..=n)
        .map(|i| Entry {
            id: sid(i),
            signer: W,
            link: Some(Link {
                chain: C,
                seq: i as u64,
                prev: (i > 1).then(|| sid(i - 1)),
            }),
            time: DateTime::from_timestamp(i as i64 * 1000, 0).unwrap(),
        })
        .collect()
}

fn tip(n: u8) -> Tip {
    Tip {
        signer: W,
        chain: C,
        seq: n as u64,
        snapshot: sid(n),
    }
}

fn none() -> HashSet<SnapshotId> {
    HashSet::new()
}

#[test]
fn an_intact_chain_is_live_and_remembered() {
    let v = verify(None, &chain(3), &none(), &none(), &Observation::default());
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.live.len(), 3);
    assert_eq!(v.seen.tips, vec![tip(3)]);
}

#[test]
fn fail_a_deleted_snapshot_is_named_by_its_successor() {
    let mut e = chain(3);
    e.remove(1);
    let v = verify(None, &e, &none(), &none(), &Observation::default());
    assert_eq!(v.problems.len(), 1);
    assert!(matches!(
        &v.problems[0],
        Problem::Missing { snapshot: Some(s), seqs: Some((2, 2)), cause: Cause::Followed, .. } if *s == sid(2)
    ));
    assert!(!v.problems[0].is_rollback());
    // Stored but unreadable: reported elsewhere, not as missing.
    let v = verify(None, &e, &[sid(2)].into(), &none(), &Observation::default());
    assert!(v.problems.is_empty());
}

#[test]
fn fail_a_store_behind_what_was_seen_is_a_rollback() {
    let known = Observation {
        tips: vec![tip(3)],
        ..Observation::default()
    };
    let v = verify(None, &chain(1), &none(), &none(), &known);
    assert_eq!(v.problems.len(), 1);
    assert!(v.problems.iter().all(Problem::is_rollback));
    assert!(v.problems[0].to_string().contains(&sid(3).to_string()));
    assert!(v.problems[0].to_string().contains("numbers 2 to 3"));
    // What was seen is never forgotten.
    assert_eq!(v.seen.tips, vec![tip(3)]);
    // The same store, seen again after a new backup, is fine.
    let v = verify(None, &chain(4), &none(), &none(), &known);
    assert!(v.problems.is_empty());
    assert_eq!(v.seen.tips, vec![tip(4)]);
}

#[test]
fn checkpoints_forget_and_replays_stay_forgotten() {
    let cp = Checkpoint {
        format: 1,
        generation: 1,
        previous: None,
        time: DateTime::from_timestamp(3500, 0).unwrap(),
        chains: vec![tip(3)],
        live: vec![sid(1), sid(3)],
    };
    let cid = CheckpointId(Id([7; 32]));
    // #2 was forgotten but is back; #4 came after the checkpoint.
    let v = verify(
        Some((&cid, &cp)),
        &chain(4),
        &none(),
        &none(),
        &Observation::default(),
    );
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.forgotten, vec![sid(2)]);
    assert_eq!(v.live, [sid(1), sid(3), sid(4)].into());
    assert_eq!((v.seen.generation, v.seen.checkpoint), (1, Some(cid)));
    // fail_: a live snapshot of the checkpoint deleted.
    let mut e = chain(4);
    e.remove(2);
    let v = verify(
        Some((&cid, &cp)),
        &e,
        &none(),
        &none(),
        &Observation::default(),
    );
    assert!(matches!(
        &v.problems[..],
        [Problem::Missing { cause: Cause::Checkpoint(1), snapshot: Some(s), .. }] if *s == sid(3)
    ));
    // fail_: an older checkpoint served after a newer one was seen.
    let known = Observation {
        generation: 2,
        ..Observation::default()
    };
    let v = verify(Some((&cid, &cp)), &chain(4), &none(), &none(), &known);
    assert!(matches!(
        &v.problems[..],
        [Problem::CheckpointBehind { seen: 2, found: 1 }]
    ));
    assert!(v.problems[0].is_rollback());
}

#[test]
fn fail_two_snapshots_in_one_place_are_a_fork() {
    let mut e = chain(2);
    let mut other = e[1].clone();
    other.id = sid(9);
    e.push(other);
    let v = verify(None, &e, &none(), &none(), &Observation::default());
    assert!(matches!(&v.problems[..], [Problem::Fork(_)]));
    // A snapshot replaced in its place after it was seen.
    let known = Observation {
        tips: vec![tip(2)],
        ..Observation::default()
    };
    let mut e = chain(2);
    e[1].id = sid(9);
    let v = verify(None, &e, &none(), &none(), &known);
    assert!(v.problems.iter().any(|p| matches!(p, Problem::Fork(_))));
}

#[test]
fn unchained_manifests_before_a_checkpoint_are_forgotten_unless_kept() {
    let mut e = chain(1);
    e[0].link = None;
    let cp = Checkpoint {
        format: 1,
        generation: 1,
        previous: None,
        time: DateTime::from_timestamp(5000, 0).unwrap(),
        chains: vec![],
        live: vec![],
    };
    let cid = CheckpointId(Id([7; 32]));
    let v = verify(
        Some((&cid, &cp)),
        &e,
        &none(),
        &none(),
        &Observation::default(),
    );
    assert_eq!((v.forgotten.clone(), v.unchained), (vec![sid(1)], 1));
    let v = verify(None, &e, &none(), &none(), &Observation::default());
    assert!(v.live.contains(&sid(1)) && v.problems.is_empty());
}

#[test]
fn fail_a_stale_client_reusing_places_is_a_fork_and_stays_live() {
    let cp = Checkpoint {
        format: 1,
        generation: 1,
        previous: None,
        time: DateTime::from_timestamp(3500, 0).unwrap(),
        chains: vec![tip(3)],
        live: vec![sid(3)],
    };
    let cid = CheckpointId(Id([7; 32]));
    // A machine restored from an image takes number 2 again, after the checkpoint.
    let mut e = chain(3);
    e[1].id = sid(9);
    e[1].time = DateTime::from_timestamp(9000, 0).unwrap();
    let v = verify(
        Some((&cid, &cp)),
        &e,
        &none(),
        &none(),
        &Observation::default(),
    );
    assert!(v.live.contains(&sid(9)), "{v:?}");
    assert!(
        matches!(&v.problems[..], [Problem::Fork(_)]),
        "{:?}",
        v.problems
    );
}

#[test]
fn fail_junk_does_not_hide_a_withheld_snapshot() {
    // 1..5; number 3 withheld, number 4 damaged: the gap before 5 is still shown.
    let mut e = chain(5);
    e.remove(3);
    e.remove(2);
    let v = verify(None, &e, &[sid(4)].into(), &none(), &Observation::default());
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    // A huge number in a writer's own chain is one problem, not billions.
    let mut e = chain(1);
    e.push(Entry {
        id: sid(200),
        signer: W,
        link: Some(Link {
            chain: C,
            seq: u64::MAX,
            prev: None,
        }),
        time: DateTime::from_timestamp(1, 0).unwrap(),
    });
    let v = verify(None, &e, &none(), &none(), &Observation::default());
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    // 1..4 with 2 and 3 gone, 3 damaged and another manifest damaged: that one may be
    // number 2 (not shown), but the loss is kept for prune and forget.
    let mut e = chain(4);
    e.remove(1);
    e.remove(1);
    let known = Observation::default();
    let v = verify(None, &e, &[sid(3), sid(77)].into(), &none(), &known);
    assert_eq!((v.problems.len(), v.suppressed.len()), (0, 1), "{v:?}");
    // Without the second damaged manifest, nothing can explain number 2.
    let v = verify(None, &e, &[sid(3)].into(), &none(), &known);
    assert_eq!((v.problems.len(), v.suppressed.len()), (1, 0), "{v:?}");
}
