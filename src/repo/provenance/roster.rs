//! The roster: the writers the owner enrolled and revoked, and whose signature a key holder
//! accepts on which kind of object (docs/FORMAT.md §17.4).

use std::collections::BTreeMap;

use super::Signer;
use crate::crypto::envelope::ObjectKind;
use crate::error::Error;
use crate::format::provenance::{Enrollment, Revocation};
use crate::id::{Id, SignerId};

/// The writers the owner enrolled and revoked, as verified when the repository was opened.
#[derive(Debug, Default)]
pub struct Roster {
    pub owner: SignerId,
    pub enrolled: BTreeMap<SignerId, Enrollment>,
    /// Revoked writers, with what they stored before (`None`: the revocation does not open,
    /// so nothing of theirs is accepted).
    pub revoked: BTreeMap<SignerId, Option<Revocation>>,
    /// Enrollments and revocations that do not verify (reported by `check`).
    pub problems: Vec<Error>,
    /// `owner` exists but the config is still format 1: a `migrate` was interrupted. Unsigned
    /// objects are accepted (as in a legacy repository) until it is run again, and nothing
    /// that deletes runs.
    pub migrating: bool,
}

fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Index => "index segment",
        ObjectKind::Snapshot => "snapshot",
        ObjectKind::Garbage => "garbage mark",
        ObjectKind::Lock => "lock",
        ObjectKind::Writer => "writer enrollment",
        ObjectKind::Revocation => "revocation",
        ObjectKind::Checkpoint => "history checkpoint",
        ObjectKind::Damage => "damage record",
        ObjectKind::Reach => "reach record",
        ObjectKind::Request => "restore request",
        ObjectKind::Approval => "approval",
        ObjectKind::Retention => "retention record",
        _ => "object",
    }
}

impl Roster {
    /// A writer's name for messages: `name (id…)`.
    pub fn describe(&self, w: &SignerId) -> String {
        match self.enrolled.get(w) {
            Some(e) => format!("writer {:?} ({})", e.name, w.short()),
            None => format!("key {}", w.short()),
        }
    }

    /// Whether `signer` may have written object `object` of `kind`; the reason when not.
    pub fn accept(
        &self,
        kind: ObjectKind,
        object: &Id,
        signer: SignerId,
    ) -> Result<Signer, String> {
        if signer == self.owner {
            return Ok(Signer::Owner(signer));
        }
        if !matches!(
            kind,
            ObjectKind::Snapshot | ObjectKind::Index | ObjectKind::Reach
        ) {
            return Err(format!(
                "signed by {}: only the owner writes a {}",
                self.describe(&signer),
                kind_name(kind)
            ));
        }
        if let Some(rev) = self.revoked.get(&signer) {
            let before = rev.as_ref().is_some_and(|r| match kind {
                ObjectKind::Snapshot | ObjectKind::Reach => {
                    r.snapshots.iter().any(|s| **s == *object)
                }
                _ => r.segments.iter().any(|s| **s == *object),
            });
            if !before {
                let when = rev
                    .as_ref()
                    .map(|r| crate::human::local_time(r.revoked))
                    .unwrap_or_else(|| "an unknown time".into());
                return Err(format!(
                    "signed by {}, revoked at {when}: not one of the objects it had stored before",
                    self.describe(&signer)
                ));
            }
            return Ok(Signer::Writer(signer));
        }
        if self.enrolled.contains_key(&signer) {
            Ok(Signer::Writer(signer))
        } else {
            Err(format!(
                "signed by key {}, which is neither the owner's nor an enrolled writer's",
                signer.short()
            ))
        }
    }
}
