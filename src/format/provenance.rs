//! Writer provenance records (docs/FORMAT.md §17): the owner's sealed signing key, writer
//! enrollments and revocations. Pure codecs and the owner-key sealing; no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::crypto::kdf;
use crate::crypto::signing::SigningKey;
use crate::crypto::{random, Key32};
use crate::error::{Error, Result};
use crate::id::{Id, SegmentId, SignerId, SnapshotId};

/// The config `format` of a repository whose objects are signed (docs/FORMAT.md §9, §17).
pub const PROVENANCE_FORMAT: u32 = 2;

const SEAL_LABEL: &[u8] = b"custody/v2/owner-seal";
const SEAL_AAD: &[u8] = b"custody/v2/owner";

/// `owner` (plaintext JSON): the owner's Ed25519 public key, and its seed sealed under a key
/// only the owner's key service can make (the *owner anchor*, docs/FORMAT.md §17.1). A
/// writer, which cannot make the anchor, can neither read the seed nor seal a seed of its own
/// that the owner would accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerRecord {
    pub format: u32,
    pub repository: Id,
    pub public: SignerId,
    /// What made the anchor (a KEK reference, for messages and `rotate rewrap`).
    pub anchor: String,
    pub created: DateTime<Utc>,
    #[serde(with = "super::wrapped::b64")]
    pub sealed_seed: Vec<u8>,
}

fn seal_key(repo: &Id, anchor: &Key32) -> Key32 {
    kdf::derive_key(repo.as_bytes(), anchor, &[SEAL_LABEL])
}

fn seal_aad(repo: &Id, public: &SignerId) -> Vec<u8> {
    [SEAL_AAD, repo.as_bytes(), public.as_bytes()].concat()
}

impl OwnerRecord {
    /// Seals `key`'s seed under `anchor`.
    pub fn seal(repo: &Id, key: &SigningKey, anchor: &Key32, described: &str) -> Result<Self> {
        let mut nonce = [0u8; NONCE_LEN];
        random::fill(&mut nonce)?;
        let mut buf = key.seed().expose().to_vec();
        let tag = aead::seal(
            &seal_key(repo, anchor),
            &nonce,
            &seal_aad(repo, &key.id()),
            &mut buf,
        );
        let sealed_seed = [&nonce[..], &buf, &tag].concat();
        buf.iter_mut().for_each(|b| *b = 0);
        Ok(OwnerRecord {
            format: 1,
            repository: *repo,
            public: key.id(),
            anchor: described.into(),
            created: Utc::now(),
            sealed_seed,
        })
    }

    /// Opens the seed with `anchor` and checks that it is the key the record names. Fails as
    /// an integrity error: either the record was replaced, or the anchor is another owner's.
    pub fn open(&self, repo: &Id, anchor: &Key32) -> Result<SigningKey> {
        let bad = |why: &str| Error::integrity("owner", why);
        if self.format != 1 || self.repository != *repo {
            return Err(bad("owner record of another repository or format"));
        }
        if self.sealed_seed.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(bad("sealed owner key has the wrong length"));
        }
        let (nonce, rest) = self.sealed_seed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| bad("nonce"))?;
        let mut buf = zeroize::Zeroizing::new(rest.to_vec());
        aead::open(
            &seal_key(repo, anchor),
            &nonce,
            &seal_aad(repo, &self.public),
            &mut buf[..],
        )
        .map_err(|_| {
            bad(
                "the owner key does not open with this key service's owner anchor \
                 (the record was replaced, or the key service is not this repository's owner)",
            )
        })?;
        let seed = Key32::from_slice(&buf[..32]).ok_or_else(|| bad("seed length"))?;
        let key = SigningKey::from_seed(seed)?;
        if key.id() != self.public {
            return Err(bad("sealed owner key does not match its public key"));
        }
        Ok(key)
    }
}

/// `writers/<writer>`: a writer enrolled by the owner (kind 8, signed by the owner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub format: u32,
    pub writer: SignerId,
    /// A name for people (`key list`, `check`, `forget`): the backup host, usually.
    pub name: String,
    pub enrolled: DateTime<Utc>,
    /// The hosts this writer may back up (`key export --host`); empty: any. A snapshot of
    /// this writer that claims another host is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// `revoked/<writer>`: a writer revoked by the owner (kind 9, signed by the owner). Objects
/// the writer stored before the revocation stay valid: exactly those listed here, which the
/// owner verified when revoking. Anything else it signs is refused, whatever date it claims.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub format: u32,
    pub writer: SignerId,
    pub revoked: DateTime<Utc>,
    #[serde(default)]
    pub snapshots: Vec<SnapshotId>,
    #[serde(default)]
    pub segments: Vec<SegmentId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_record_seals_and_fails_with_another_anchor() {
        let repo = Id([7; 32]);
        let (anchor, other) = (Key32::generate().unwrap(), Key32::generate().unwrap());
        let key = SigningKey::generate().unwrap();
        let rec = OwnerRecord::seal(&repo, &key, &anchor, "local:x").unwrap();
        assert_eq!(rec.open(&repo, &anchor).unwrap().id(), key.id());
        // fail_: another anchor, another repository, a swapped public key, a flipped byte.
        assert!(rec.open(&repo, &other).unwrap_err().is_integrity());
        assert!(rec.open(&Id([8; 32]), &anchor).is_err());
        let mut swapped = rec.clone();
        swapped.public = SigningKey::generate().unwrap().id();
        assert!(swapped.open(&repo, &anchor).is_err());
        let mut flipped = rec.clone();
        flipped.sealed_seed[20] ^= 1;
        assert!(flipped.open(&repo, &anchor).is_err());
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains(&hex::encode(key.seed().expose())));
    }
}
