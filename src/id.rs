//! 256-bit identifiers: the raw [`Id`], and one newtype per kind of object (model: rustic_core's
//! `RepoId`s), so that a pack id cannot be passed where a snapshot id is meant. Every kind
//! shares the raw id's text form (64 hex digits) and JSON form, so the newtypes change no byte
//! on disk. The store addresses objects by [`crate::store::FileKind`] plus a raw id; a typed id
//! dereferences to its raw id for that.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::crypto::random;
use crate::error::{Error, Result};

/// A 32-byte identifier, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub const LEN: usize = 32;

    /// A fresh random id (packs, snapshots, sessions, index segments).
    pub fn random() -> Result<Id> {
        let mut b = [0u8; 32];
        random::fill(&mut b)?;
        Ok(Id(b))
    }

    pub fn from_slice(b: &[u8]) -> Option<Id> {
        <[u8; 32]>::try_from(b).ok().map(Id)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;
    fn from_str(s: &str) -> Result<Id> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)
            .map_err(|_| Error::invalid(format!("not a 64-digit hex id: {s:?}")))?;
        Ok(Id(b))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The ids of one kind of object: a transparent newtype over [`Id`].
pub trait KindId:
    Copy
    + Eq
    + std::hash::Hash
    + Ord
    + fmt::Display
    + fmt::Debug
    + From<Id>
    + std::ops::Deref<Target = Id>
    + Send
    + Sync
{
}

macro_rules! kind_id {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Result<$name> {
                Id::random().map($name)
            }

            /// The raw id, as the store and the envelope address it.
            pub fn id(&self) -> Id {
                self.0
            }
        }

        impl KindId for $name {}

        impl From<Id> for $name {
            fn from(id: Id) -> $name {
                $name(id)
            }
        }

        impl From<$name> for Id {
            fn from(id: $name) -> Id {
                id.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = Id;
            fn deref(&self) -> &Id {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<$name> {
                s.parse().map($name)
            }
        }
    )*};
}

kind_id! {
    /// An object at the repository's root (`retention`): always 32 zero bytes.
    RootId;
    /// A snapshot manifest, `snapshots/<id>` (random).
    SnapshotId;
    /// A backup session: its wrapped data key is `keys/<id>` (random).
    SessionId;
    /// A pack, `data/<xx>/<id>` (random).
    PackId;
    /// An index segment, `index/<id>` (random).
    SegmentId;
    /// A garbage mark, `garbage/<id>` (random).
    MarkId;
    /// A lock, `locks/<id>` (random).
    LockId;
    /// A blob in a pack, data chunk or tree: what the index and pack headers list.
    BlobId;
    /// A data chunk: `HMAC(K_id, chunk)`.
    ChunkId;
    /// A tree: `HMAC(K_id, tree JSON)`.
    TreeId;
    /// A signer: the owner's or an enrolled writer's Ed25519 public key; names
    /// `writers/<id>` and `revoked/<id>`.
    SignerId;
    /// A chain of snapshots: one backup client's sequence under one signer (random;
    /// docs/FORMAT.md §18).
    ChainId;
    /// A history checkpoint, `history/<id>` (random; docs/FORMAT.md §18).
    CheckpointId;
    /// A restore request, `requests/<id>` (random; docs/FORMAT.md §19).
    RequestId;
    /// An approval or denial of a restore request, `approvals/<id>` (random).
    ApprovalId;
}

impl From<&BlobId> for BlobId {
    fn from(id: &BlobId) -> BlobId {
        *id
    }
}

impl From<&ChunkId> for BlobId {
    fn from(id: &ChunkId) -> BlobId {
        BlobId(id.0)
    }
}

impl From<&TreeId> for BlobId {
    fn from(id: &TreeId) -> BlobId {
        BlobId(id.0)
    }
}

impl From<ChunkId> for BlobId {
    fn from(id: ChunkId) -> BlobId {
        BlobId(id.0)
    }
}

impl From<TreeId> for BlobId {
    fn from(id: TreeId) -> BlobId {
        BlobId(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::random().unwrap();
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert!("zz".parse::<Id>().is_err());
        assert_eq!(id.short().len(), 8);
    }

    #[test]
    fn kind_ids_keep_the_raw_text_and_json_forms() {
        let id = Id::random().unwrap();
        let pack = PackId(id);
        assert_eq!(pack.to_string(), id.to_hex());
        assert_eq!(
            serde_json::to_string(&pack).unwrap(),
            serde_json::to_string(&id).unwrap()
        );
        assert_eq!(id.to_hex().parse::<PackId>().unwrap(), pack);
        assert_eq!(format!("{pack:?}"), format!("PackId({})", id.short()));
    }
}
