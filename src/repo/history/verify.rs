//! The history check (docs/FORMAT.md §18.3): from the manifests that open, the newest
//! checkpoint and what this client (or a witness) saw before, which snapshots are live,
//! which were forgotten, and which the store should hold but does not. Pure.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};

use crate::format::history::{Checkpoint, Link, Observation, Tip};
use crate::id::{ChainId, CheckpointId, SignerId, SnapshotId};

/// A manifest that opened and whose signer is accepted.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: SnapshotId,
    pub signer: SignerId,
    pub link: Option<Link>,
    pub time: DateTime<Utc>,
}

/// Why the history expects a snapshot the store does not show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A later snapshot of its chain follows it.
    Followed,
    /// The newest checkpoint lists it as live.
    Checkpoint(u64),
    /// This client or the witness saw it (or a later one) before: the store went back.
    SeenBefore,
}

/// Something the history says and the store contradicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Snapshots that should exist are not in the store: numbers `seqs` (first, last) of a
    /// chain, the last one named by `snapshot` when its id is known.
    Missing {
        snapshot: Option<SnapshotId>,
        signer: SignerId,
        chain: Option<ChainId>,
        seqs: Option<(u64, u64)>,
        cause: Cause,
    },
    /// The newest checkpoint in the store is older than one seen before.
    CheckpointBehind { seen: u64, found: u64 },
    /// Two different snapshots claim one place in a chain, or a link does not follow.
    Fork(String),
}

impl Problem {
    /// Something the store should hold and does not (anything but a fork).
    pub fn is_loss(&self) -> bool {
        !matches!(self, Problem::Fork(_))
    }

    /// A sign that the store was rolled back (rather than one object lost).
    pub fn is_rollback(&self) -> bool {
        matches!(
            self,
            Problem::CheckpointBehind { .. }
                | Problem::Missing {
                    cause: Cause::SeenBefore,
                    ..
                }
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing {
                snapshot,
                signer,
                chain,
                seqs,
                cause,
            } => {
                let many = seqs.is_some_and(|(a, b)| b > a);
                match (snapshot, many) {
                    (Some(s), false) => write!(f, "snapshot {s} is missing")?,
                    (Some(s), true) => write!(f, "snapshot {s} and the ones before it are missing")?,
                    (None, false) => write!(f, "a snapshot is missing")?,
                    (None, true) => write!(f, "snapshots are missing")?,
                }
                match (chain, seqs) {
                    (Some(c), Some((a, b))) if b > a => write!(
                        f,
                        " (numbers {a} to {b} of chain {} signed by {})",
                        c.short(),
                        signer.short()
                    )?,
                    (Some(c), Some((a, _))) => write!(
                        f,
                        " (number {a} of chain {} signed by {})",
                        c.short(),
                        signer.short()
                    )?,
                    _ => {}
                }
                match cause {
                    Cause::Followed => write!(f, ": a later snapshot of its chain follows it"),
                    Cause::Checkpoint(g) => write!(f, ": checkpoint {g} lists it as live"),
                    Cause::SeenBefore => {
                        write!(f, ": this client or the witness saw it before")
                    }
                }
            }
            Problem::CheckpointBehind { seen, found } => write!(
                f,
                "the newest history checkpoint in the store is number {found}, but number {seen} was seen before (forgotten snapshots may have been put back)"
            ),
            Problem::Fork(s) => f.write_str(s),
        }
    }
}

/// The outcome of the check.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Manifests that count as snapshots (every entry not forgotten).
    pub live: HashSet<SnapshotId>,
    /// Manifests still stored that a checkpoint forgot (an interrupted forget, or put back).
    pub forgotten: Vec<SnapshotId>,
    /// Manifests without a link (written before chains existed).
    pub unchained: usize,
    pub problems: Vec<Problem>,
    /// Missing snapshots of unknown id not shown, because as many stored manifests do not
    /// open (they may be those): still losses for prune and forget, which must not act on
    /// them.
    pub suppressed: Vec<Problem>,
    /// What this client may now remember: never less than it knew.
    pub seen: Observation,
}

/// How far before a checkpoint an unchained manifest must be dated to count as forgotten
/// (one written by an older build while the checkpoint was being made stays live).
const UNCHAINED_MARGIN_SECS: i64 = 3600;

/// Checks `entries` against `checkpoint` and `known`. `unreadable` names manifests that are
/// stored but do not open, `refused` those that open but whose signer is not accepted: both
/// are present, so neither is reported missing (the unreadable ones are reported as such).
pub fn verify(
    checkpoint: Option<(&CheckpointId, &Checkpoint)>,
    entries: &[Entry],
    unreadable: &HashSet<SnapshotId>,
    refused: &HashSet<SnapshotId>,
    known: &Observation,
) -> Verdict {
    let mut v = Verdict {
        seen: known.clone(),
        ..Verdict::default()
    };
    let present: HashSet<SnapshotId> = entries.iter().map(|e| e.id).collect();
    let stored = |id: &SnapshotId| unreadable.contains(id) || refused.contains(id);
    let gone = |id: &SnapshotId| !present.contains(id) && !stored(id);
    let (generation, base_tips, live_at_checkpoint, checkpoint_time) = match checkpoint {
        Some((id, c)) => {
            v.seen.merge(&Observation {
                generation: c.generation,
                checkpoint: Some(*id),
                tips: vec![],
            });
            (
                c.generation,
                c.chains.clone(),
                c.live.iter().copied().collect::<HashSet<_>>(),
                Some(c.time),
            )
        }
        None => (0, vec![], HashSet::new(), None),
    };
    if known.generation > generation {
        v.problems.push(Problem::CheckpointBehind {
            seen: known.generation,
            found: generation,
        });
    }
    for id in live_at_checkpoint.iter().filter(|id| gone(id)) {
        let tip = base_tips.iter().find(|t| t.snapshot == *id);
        v.problems.push(Problem::Missing {
            snapshot: Some(*id),
            signer: tip.map(|t| t.signer).unwrap_or_default(),
            chain: tip.map(|t| t.chain),
            seqs: tip.map(|t| (t.seq, t.seq)),
            cause: Cause::Checkpoint(generation),
        });
    }
    // Dated before the checkpoint was made: what it did not keep, it forgot.
    let before_checkpoint = |e: &Entry, margin: i64| {
        checkpoint_time.is_some_and(|t| e.time <= t - chrono::Duration::seconds(margin))
    };

    // Chains: the checkpoint's tips, then every linked manifest in order.
    let mut chains: BTreeMap<(SignerId, ChainId), Vec<&Entry>> = BTreeMap::new();
    for t in &base_tips {
        chains.entry((t.signer, t.chain)).or_default();
    }
    for e in entries {
        match &e.link {
            Some(l) => chains.entry((e.signer, l.chain)).or_default().push(e),
            None => {
                v.unchained += 1;
                if before_checkpoint(e, UNCHAINED_MARGIN_SECS)
                    && !live_at_checkpoint.contains(&e.id)
                {
                    v.forgotten.push(e.id);
                } else {
                    v.live.insert(e.id);
                }
            }
        }
    }
    for t in &known.tips {
        chains.entry((t.signer, t.chain)).or_default();
    }
    // Unnamed losses may be unreadable manifests (whose places are unknown).
    let mut unnamed = Vec::new();
    for ((signer, chain), mut list) in chains {
        let base = base_tips
            .iter()
            .find(|t| t.signer == signer && t.chain == chain);
        let (base_seq, base_id) = base.map_or((0, None), |t| (t.seq, Some(t.snapshot)));
        list.sort_by_key(|e| (e.link.map_or(0, |l| l.seq), e.id));
        let (mut expect_seq, mut expect_prev) = (base_seq.saturating_add(1), base_id);
        let mut missing = |v: &mut Verdict, snapshot: Option<SnapshotId>, a: u64, b: u64, cause| {
            let p = Problem::Missing {
                snapshot,
                signer,
                chain: Some(chain),
                seqs: Some((a, b)),
                cause,
            };
            match snapshot {
                // Present after all (it does not open, or its signer is refused).
                Some(s) if stored(&s) => {
                    if a < b {
                        unnamed.push(p);
                    }
                }
                Some(_) => v.problems.push(p),
                None => unnamed.push(p),
            }
        };
        for e in list.iter().copied() {
            let l = e.link.expect("only linked entries are in chains");
            if l.seq <= base_seq {
                if live_at_checkpoint.contains(&e.id) {
                    v.live.insert(e.id);
                } else if before_checkpoint(e, 0) {
                    v.forgotten.push(e.id);
                } else {
                    // Newer than the checkpoint, yet in a place it had seen taken: a client
                    // whose state went back (a restored or cloned machine). Kept.
                    v.problems.push(Problem::Fork(format!(
                        "snapshot {} claims number {} of chain {}, which checkpoint {generation} had seen taken (a client whose history state went back?)",
                        e.id, l.seq, chain.short()
                    )));
                    v.live.insert(e.id);
                }
                continue;
            }
            v.live.insert(e.id);
            if l.seq < expect_seq {
                v.problems.push(Problem::Fork(format!(
                    "snapshots {} and another both claim number {} of chain {} signed by {}",
                    e.id,
                    l.seq,
                    chain.short(),
                    signer.short()
                )));
                continue;
            }
            if l.seq > expect_seq {
                // The one just before it is named by its link.
                missing(&mut v, l.prev, expect_seq, l.seq - 1, Cause::Followed);
            } else if l.prev != expect_prev {
                v.problems.push(Problem::Fork(format!(
                    "snapshot {} (number {} of chain {} signed by {}) does not follow the chain's previous snapshot",
                    e.id,
                    l.seq,
                    chain.short(),
                    signer.short()
                )));
            }
            expect_seq = l.seq.saturating_add(1);
            expect_prev = Some(e.id);
        }
        let visible = expect_seq - 1;
        match (list.last(), visible > base_seq) {
            (Some(top), true) => v.seen.raise(Tip {
                signer,
                chain,
                seq: visible,
                snapshot: top.id,
            }),
            _ => {
                if let Some(b) = base {
                    v.seen.raise(*b);
                }
            }
        }
        if let Some(k) = known.tip(&signer, &chain) {
            if k.seq > visible {
                missing(
                    &mut v,
                    Some(k.snapshot),
                    visible.saturating_add(1),
                    k.seq,
                    Cause::SeenBefore,
                );
            } else if k.seq > base_seq
                && !list
                    .iter()
                    .any(|e| e.id == k.snapshot && e.link.is_some_and(|l| l.seq == k.seq))
            {
                v.problems.push(Problem::Fork(format!(
                    "snapshot {} was number {} of chain {} when seen before; another snapshot has its place now",
                    k.snapshot,
                    k.seq,
                    chain.short()
                )));
            }
        }
    }
    // As many unnamed losses as there are unreadable manifests not named anywhere are left
    // to those manifests' own errors (shown), but kept as losses (prune and forget).
    let named: HashSet<SnapshotId> = v
        .problems
        .iter()
        .chain(&unnamed)
        .filter_map(|p| match p {
            Problem::Missing { snapshot, .. } => *snapshot,
            _ => None,
        })
        .collect();
    let mut spare = unreadable.iter().filter(|id| !named.contains(id)).count() as u64;
    for p in unnamed {
        let count = match &p {
            Problem::Missing {
                seqs: Some((a, b)),
                snapshot,
                ..
            } => b - a + 1 - u64::from(snapshot.is_some()),
            _ => 1,
        };
        if count <= spare {
            spare -= count;
            v.suppressed.push(p);
        } else {
            v.problems.push(p);
        }
    }
    v.forgotten.sort();
    v
}

#[cfg(test)]
mod tests;
