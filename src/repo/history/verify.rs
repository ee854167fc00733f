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
    /// A snapshot that should exist (its id when known) is not in the store.
    Missing {
        snapshot: Option<SnapshotId>,
        signer: SignerId,
        chain: Option<ChainId>,
        seq: Option<u64>,
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
                seq,
                cause,
            } => {
                match snapshot {
                    Some(s) => write!(f, "snapshot {s} is missing")?,
                    None => write!(f, "a snapshot is missing")?,
                }
                if let (Some(c), Some(n)) = (chain, seq) {
                    write!(f, " (number {n} of chain {} signed by {})", c.short(), signer.short())?;
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
    /// What this client may now remember: never less than it knew.
    pub seen: Observation,
}

/// Checks `entries` against `checkpoint` and `known`. `unreadable` names manifests that are
/// stored but do not open: they are reported already and not again as missing.
pub fn verify(
    checkpoint: Option<(&CheckpointId, &Checkpoint)>,
    entries: &[Entry],
    unreadable: &HashSet<SnapshotId>,
    known: &Observation,
) -> Verdict {
    let mut v = Verdict {
        seen: known.clone(),
        ..Verdict::default()
    };
    let present: HashSet<SnapshotId> = entries.iter().map(|e| e.id).collect();
    let gone = |id: &SnapshotId| !present.contains(id) && !unreadable.contains(id);
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
            seq: tip.map(|t| t.seq),
            cause: Cause::Checkpoint(generation),
        });
    }

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
                // Before the checkpoint and not kept by it: forgotten (or put back).
                if checkpoint_time.is_some_and(|t| e.time <= t)
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
    for ((signer, chain), mut list) in chains {
        let base = base_tips
            .iter()
            .find(|t| t.signer == signer && t.chain == chain);
        let (base_seq, base_id) = base.map_or((0, None), |t| (t.seq, Some(t.snapshot)));
        list.sort_by_key(|e| (e.link.map_or(0, |l| l.seq), e.id));
        let (mut expect_seq, mut expect_prev) = (base_seq + 1, base_id);
        for e in list.iter().copied() {
            let l = e.link.expect("only linked entries are in chains");
            if l.seq <= base_seq {
                if live_at_checkpoint.contains(&e.id) {
                    v.live.insert(e.id);
                } else if base.is_some_and(|t| t.snapshot == e.id) || l.seq < base_seq {
                    v.forgotten.push(e.id);
                } else {
                    v.problems.push(Problem::Fork(format!(
                        "snapshot {} claims number {} of chain {}, which checkpoint {generation} gives to another snapshot",
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
                // The one just before it is named by its link; any earlier are unnamed.
                for seq in expect_seq..l.seq {
                    let snapshot = if seq + 1 == l.seq { l.prev } else { None };
                    if snapshot.is_some_and(|s| unreadable.contains(&s)) {
                        continue;
                    }
                    v.problems.push(Problem::Missing {
                        snapshot,
                        signer,
                        chain: Some(chain),
                        seq: Some(seq),
                        cause: Cause::Followed,
                    });
                }
            } else if l.prev != expect_prev {
                v.problems.push(Problem::Fork(format!(
                    "snapshot {} (number {} of chain {} signed by {}) does not follow the chain's previous snapshot",
                    e.id,
                    l.seq,
                    chain.short(),
                    signer.short()
                )));
            }
            expect_seq = l.seq + 1;
            expect_prev = Some(e.id);
        }
        let visible = expect_seq - 1;
        if let (Some(top), true) = (list.last(), visible > base_seq) {
            v.seen.raise(Tip {
                signer,
                chain,
                seq: visible,
                snapshot: top.id,
            });
        } else if let Some(b) = base {
            v.seen.raise(*b);
        }
        if let Some(k) = known.tip(&signer, &chain) {
            if k.seq > visible {
                for seq in visible + 1..=k.seq {
                    let snapshot = (seq == k.seq).then_some(k.snapshot);
                    if snapshot.is_some_and(|s| unreadable.contains(&s)) {
                        continue;
                    }
                    v.problems.push(Problem::Missing {
                        snapshot,
                        signer,
                        chain: Some(chain),
                        seq: Some(seq),
                        cause: Cause::SeenBefore,
                    });
                }
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
    // A missing snapshot whose id is unknown may be one of the stored manifests that do not
    // open (their places are unknown): as many such reports as there are unexplained
    // unreadable manifests are left to those manifests' own errors.
    let named: HashSet<SnapshotId> = v
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::Missing { snapshot, .. } => *snapshot,
            _ => None,
        })
        .collect();
    let mut spare = unreadable.iter().filter(|id| !named.contains(id)).count();
    v.problems.retain(|p| match p {
        Problem::Missing { snapshot: None, .. } if spare > 0 => {
            spare -= 1;
            false
        }
        _ => true,
    });
    v.forgotten.sort();
    v
}

#[cfg(test)]
mod tests;
