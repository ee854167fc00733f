//! Writers as the owner manages them (docs/FORMAT.md §17.3): enrollment (`key export --role
//! writer`), the listing (`key writers`), and revocation (`key revoke`).

use chrono::Utc;

use super::provenance::Provenance;
use super::Repository;
use crate::crypto::signing::SigningKey;
use crate::error::{Error, Result};
use crate::format::provenance::{Enrollment, Revocation};
use crate::id::SignerId;
use crate::identity::WriterIdentity;
use crate::store::FileKind;

impl Repository {
    /// Enrolls a new writer (`key export --role writer`): its identity, for the writer's host.
    pub fn enroll_writer(&self, name: &str, hosts: &[String]) -> Result<WriterIdentity> {
        let Provenance::Owner { roster, .. } = &self.provenance else {
            return Err(Error::invalid(
                "enrolling a writer needs the owner's key service, in a repository that signs its objects (run `custody migrate` on an older one)",
            ));
        };
        let key = SigningKey::generate()?;
        let e = Enrollment {
            format: 1,
            writer: key.id(),
            name: name.into(),
            enrolled: Utc::now(),
            hosts: hosts.to_vec(),
        };
        self.save_object(&key.id(), &e)?;
        Ok(WriterIdentity {
            repository: self.id(),
            name: name.into(),
            owner: roster.owner,
            key,
        })
    }
}

/// `key revoke`: who was revoked, and what of theirs stays valid.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriterRevoked {
    pub writer: SignerId,
    pub name: String,
    pub revoked: chrono::DateTime<Utc>,
    /// Snapshots and index segments it stored before, which stay valid.
    pub snapshots: usize,
    pub segments: usize,
}

impl std::fmt::Display for WriterRevoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "revoked writer {:?} ({}): its {} snapshot(s) and {} index segment(s) stored so far stay valid; anything it stores from now on is refused",
            self.name,
            self.writer.short(),
            self.snapshots,
            self.segments
        )
    }
}

/// One enrolled writer, as `key list` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriterListing {
    pub writer: SignerId,
    pub name: String,
    pub enrolled: chrono::DateTime<Utc>,
    /// The hosts it may back up (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<chrono::DateTime<Utc>>,
}

impl Repository {
    /// The enrolled writers (owner only).
    pub fn writers(&self) -> Vec<WriterListing> {
        let Some(roster) = self.roster() else {
            return Vec::new();
        };
        roster
            .enrolled
            .values()
            .map(|e| WriterListing {
                writer: e.writer,
                name: e.name.clone(),
                enrolled: e.enrolled,
                hosts: e.hosts.clone(),
                revoked: roster
                    .revoked
                    .get(&e.writer)
                    .map(|r| r.as_ref().map(|r| r.revoked).unwrap_or_default()),
            })
            .collect()
    }

    /// Revokes an enrolled writer, named by id, id prefix or name (`key revoke`). The
    /// snapshots and segments it signed so far are listed in the revocation, so they stay
    /// valid whatever dates anything it writes later claims.
    pub fn revoke_writer(&self, spec: &str) -> Result<WriterRevoked> {
        self.require_owner("key revoke")?;
        let Some(roster) = self.roster() else {
            return Err(Error::invalid(
                "revoking a writer needs the owner's key service, in a repository that signs its objects",
            ));
        };
        let matches: Vec<&Enrollment> = roster
            .enrolled
            .values()
            .filter(|e| e.name == spec || (!spec.is_empty() && e.writer.to_hex().starts_with(spec)))
            .collect();
        let e = match matches.as_slice() {
            [e] => *e,
            [] => return Err(Error::NotFound(format!("enrolled writer {spec:?}"))),
            _ => {
                return Err(Error::invalid(format!(
                    "{spec:?} names {} writers: give more of the id",
                    matches.len()
                )))
            }
        };
        if roster.revoked.contains_key(&e.writer) {
            return Err(Error::AlreadyExists(format!("a revocation of {spec:?}")));
        }
        let w = e.writer;
        let mut rev = Revocation {
            format: 1,
            writer: w,
            revoked: Utc::now(),
            ..Revocation::default()
        };
        for id in self.snapshot_ids()? {
            match self.snapshot_signer(&id) {
                Ok(Some(s)) if s.id() == w => rev.snapshots.push(id),
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) if e.is_integrity() => {}
                Err(e) => return Err(e),
            }
        }
        for (id, _) in self.store.list(FileKind::Index)? {
            let id = crate::id::SegmentId(id);
            match self.load_object_signed::<crate::format::index::IndexSegment>(&id) {
                Ok((_, Some(s))) if s.id() == w => rev.segments.push(id),
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) if e.is_integrity() => {}
                Err(e) => return Err(e),
            }
        }
        self.save_object(&w, &rev)?;
        Ok(WriterRevoked {
            writer: w,
            name: e.name.clone(),
            revoked: rev.revoked,
            snapshots: rev.snapshots.len(),
            segments: rev.segments.len(),
        })
    }
}
