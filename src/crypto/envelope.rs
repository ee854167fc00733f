//! The envelope around every encrypted byte custody stores (see docs/FORMAT.md, "Envelope").
//!
//! Each object or blob gets its own AES-256-GCM key and a 32-byte key commitment, both from
//! HKDF-SHA256 over a root key (a session DEK's pack key, or the index key) and the object's
//! binding. The commitment is checked before decryption, so a ciphertext opens under one key
//! only; the AAD binds repository, kind, container, object, version, algorithm and key id, so
//! an object moved to another name, pack, repository or kind fails to open.

use std::fmt;

use subtle::ConstantTimeEq;

use super::aead::{self, NONCE_LEN, TAG_LEN};
use super::kdf::{self, label};
use super::{random, Key32};
use crate::error::Result;
use crate::id::Id;

pub const MAGIC: [u8; 4] = *b"CSTD";
/// The envelope format version written by this build, and the only one it reads.
pub const VERSION: u8 = 1;
/// AES-256-GCM, keys and commitment from HKDF-SHA256, random 96-bit nonce.
pub const ALG_AES256GCM_HKDF: u8 = 1;

pub const COMMIT_LEN: usize = 32;
/// magic, version, kind, algorithm, reserved.
pub const PREFIX_LEN: usize = 8;
/// Plaintext header of an envelope: prefix and key id.
pub const HEADER_LEN: usize = PREFIX_LEN + Id::LEN;
/// Bytes a sealed blob adds to its plaintext: nonce, commitment, tag.
pub const BLOB_OVERHEAD: usize = NONCE_LEN + COMMIT_LEN + TAG_LEN;
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + BLOB_OVERHEAD;

/// What an envelope protects; part of the AAD and of key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectKind {
    /// A data chunk inside a pack.
    DataBlob = 1,
    /// A tree (directory listing) inside a pack.
    TreeBlob = 2,
    /// The header at the end of a pack.
    PackHeader = 3,
    /// An index segment.
    Index = 4,
    /// A snapshot manifest.
    Snapshot = 5,
    /// A garbage mark written by prune.
    Garbage = 6,
    /// A prune or re-encryption lock.
    Lock = 7,
    /// A writer's enrollment, signed by the owner.
    Writer = 8,
    /// A writer's revocation, signed by the owner.
    Revocation = 9,
    /// A history checkpoint, signed by the owner.
    Checkpoint = 10,
    /// A record of packs found missing or damaged, signed by the owner.
    Damage = 11,
    /// The sessions a snapshot needs (docs/FORMAT.md §19.1).
    Reach = 12,
    /// A restore request (§19.2).
    Request = 13,
    /// A key holder's approval or denial of a restore request (§19.3).
    Approval = 14,
    /// The repository's Object Lock retention settings, signed by the owner (§21).
    Retention = 15,
}

impl ObjectKind {
    pub fn from_u8(v: u8) -> Option<ObjectKind> {
        Some(match v {
            1 => ObjectKind::DataBlob,
            2 => ObjectKind::TreeBlob,
            3 => ObjectKind::PackHeader,
            4 => ObjectKind::Index,
            5 => ObjectKind::Snapshot,
            6 => ObjectKind::Garbage,
            7 => ObjectKind::Lock,
            8 => ObjectKind::Writer,
            9 => ObjectKind::Revocation,
            10 => ObjectKind::Checkpoint,
            11 => ObjectKind::Damage,
            12 => ObjectKind::Reach,
            13 => ObjectKind::Request,
            14 => ObjectKind::Approval,
            15 => ObjectKind::Retention,
            _ => return None,
        })
    }
}

/// Everything a ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub repo: &'a Id,
    pub kind: ObjectKind,
    /// The pack holding a blob; `Id::default()` for top-level objects.
    pub container: &'a Id,
    /// Chunk id, pack id, snapshot id or segment id.
    pub object: &'a Id,
    /// Which root key sealed it: the session id, or the repository secret's id.
    pub key_id: &'a Id,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut a = Vec::with_capacity(16 + 4 * 32);
        a.extend_from_slice(b"custody-aad");
        a.extend_from_slice(&[VERSION, ALG_AES256GCM_HKDF, self.kind as u8]);
        a.extend_from_slice(self.repo.as_bytes());
        a.extend_from_slice(self.container.as_bytes());
        a.extend_from_slice(self.object.as_bytes());
        a.extend_from_slice(self.key_id.as_bytes());
        a
    }

    /// (encryption key, commitment) for this binding under `root`.
    fn keys(&self, root: &Key32) -> (Key32, [u8; COMMIT_LEN]) {
        let mut okm = zeroize::Zeroizing::new([0u8; 64]);
        kdf::hkdf(
            self.repo.as_bytes(),
            root.expose(),
            &[
                label::OBJECT,
                &[self.kind as u8],
                self.container.as_bytes(),
                self.object.as_bytes(),
            ],
            &mut okm[..],
        );
        let enc = Key32::from_slice(&okm[..32]).expect("32 bytes");
        let mut commit = [0u8; COMMIT_LEN];
        commit.copy_from_slice(&okm[32..]);
        (enc, commit)
    }
}

/// Why an envelope or blob did not open. Says nothing about keys or plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    Truncated,
    BadMagic,
    /// A version other than the one this build accepts (older ones are downgrades).
    Version(u8),
    Algorithm(u8),
    Kind {
        expected: ObjectKind,
        found: u8,
    },
    KeyId,
    /// The key commitment does not match: wrong key, wrong binding, or tampering.
    Commitment,
    /// The AEAD tag did not verify.
    Unauthentic,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Truncated => f.write_str("truncated ciphertext"),
            OpenError::BadMagic => f.write_str("not a custody envelope (bad magic)"),
            OpenError::Version(v) => write!(
                f,
                "envelope format version {v} refused (this repository requires version {VERSION})"
            ),
            OpenError::Algorithm(a) => write!(
                f,
                "algorithm {a} refused (this repository requires {ALG_AES256GCM_HKDF})"
            ),
            OpenError::Kind { expected, found } => {
                write!(f, "object kind {found} where {expected:?} was expected")
            }
            OpenError::KeyId => f.write_str("sealed under a different key than its name says"),
            OpenError::Commitment => f.write_str(
                "key commitment mismatch (wrong key or object moved, swapped or altered)",
            ),
            OpenError::Unauthentic => f.write_str("authentication tag mismatch (data altered)"),
        }
    }
}

/// The plaintext header of an envelope: enough to find the root key before opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub key_id: Id,
}

pub fn parse_header(bytes: &[u8]) -> Result<Header, OpenError> {
    if bytes.len() < ENVELOPE_OVERHEAD {
        return Err(OpenError::Truncated);
    }
    if bytes[..4] != MAGIC {
        return Err(OpenError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(OpenError::Version(bytes[4]));
    }
    if bytes[6] != ALG_AES256GCM_HKDF {
        return Err(OpenError::Algorithm(bytes[6]));
    }
    let key_id = Id::from_slice(&bytes[PREFIX_LEN..HEADER_LEN]).ok_or(OpenError::Truncated)?;
    Ok(Header {
        kind: bytes[5],
        key_id,
    })
}

/// Seals a blob: `nonce || commitment || ciphertext || tag`. No plaintext marker, so blob
/// boundaries inside a pack are invisible without the pack header.
pub fn seal_blob(root: &Key32, b: &Binding, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + BLOB_OVERHEAD);
    seal_into(root, b, plaintext, &mut out)?;
    Ok(out)
}

fn seal_into(root: &Key32, b: &Binding, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
    seal_blob_with(root, b, out, |out| out.extend_from_slice(plaintext))
}

/// Appends a sealed blob to `out` whose plaintext is what `write` appends to it: the body is
/// encrypted where it was written, so a packer that compresses straight into its pack buffer
/// copies no body (see [`crate::pack::PackBuilder::add`]). `write` must only append.
pub fn seal_blob_with<T>(
    root: &Key32,
    b: &Binding,
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> T,
) -> Result<T> {
    let (enc, commit) = b.keys(root);
    let mut nonce = [0u8; NONCE_LEN];
    random::fill(&mut nonce)?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&commit);
    let start = out.len();
    let written = write(out);
    let tag = aead::seal(&enc, &nonce, &b.aad(), &mut out[start..]);
    out.extend_from_slice(&tag);
    Ok(written)
}

/// Opens a sealed blob after checking its key commitment.
pub fn open_blob(root: &Key32, b: &Binding, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let (enc, nonce) = committed_key(root, b, sealed)?;
    let mut buf = sealed[NONCE_LEN + COMMIT_LEN..].to_vec();
    let n = aead::open(&enc, &nonce, &b.aad(), &mut buf).map_err(|_| OpenError::Unauthentic)?;
    buf.truncate(n);
    Ok(buf)
}

/// [`open_blob`] decrypting where the blob lies, for a reader that owns the buffer (a restore
/// owns each span it reads: a copy per blob was a tenth of its CPU). On failure the buffer's
/// bytes are unspecified.
pub fn open_blob_in_place<'a>(
    root: &Key32,
    b: &Binding,
    sealed: &'a mut [u8],
) -> Result<&'a [u8], OpenError> {
    let (enc, nonce) = committed_key(root, b, sealed)?;
    let body = &mut sealed[NONCE_LEN + COMMIT_LEN..];
    let n = aead::open(&enc, &nonce, &b.aad(), body).map_err(|_| OpenError::Unauthentic)?;
    Ok(&body[..n])
}

/// The blob's encryption key and nonce, once its stored commitment matches the binding's.
fn committed_key(
    root: &Key32,
    b: &Binding,
    sealed: &[u8],
) -> Result<(Key32, [u8; NONCE_LEN]), OpenError> {
    if sealed.len() < BLOB_OVERHEAD {
        return Err(OpenError::Truncated);
    }
    let (enc, commit) = b.keys(root);
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().expect("length checked");
    let stored = &sealed[NONCE_LEN..NONCE_LEN + COMMIT_LEN];
    if !bool::from(stored.ct_eq(&commit)) {
        return Err(OpenError::Commitment);
    }
    Ok((enc, nonce))
}

/// Seals a top-level object with its self-describing header.
pub fn seal_object(root: &Key32, b: &Binding, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + ENVELOPE_OVERHEAD);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, b.kind as u8, ALG_AES256GCM_HKDF, 0]);
    out.extend_from_slice(b.key_id.as_bytes());
    seal_into(root, b, plaintext, &mut out)?;
    Ok(out)
}

/// Opens a top-level object: header checks (no downgrade), then commitment, then AEAD.
pub fn open_object(root: &Key32, b: &Binding, bytes: &[u8]) -> Result<Vec<u8>, OpenError> {
    let h = parse_header(bytes)?;
    if h.kind != b.kind as u8 {
        return Err(OpenError::Kind {
            expected: b.kind,
            found: h.kind,
        });
    }
    if bytes[7] != 0 {
        return Err(OpenError::Unauthentic);
    }
    if &h.key_id != b.key_id {
        return Err(OpenError::KeyId);
    }
    open_blob(root, b, &bytes[HEADER_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Id, Id, Id, Id) {
        (
            Id::random().unwrap(),
            Id::random().unwrap(),
            Id::random().unwrap(),
            Id::random().unwrap(),
        )
    }

    #[test]
    fn object_round_trip_and_every_byte_is_protected() {
        let root = Key32::generate().unwrap();
        let (repo, obj, key_id, _) = ids();
        let zero = Id::default();
        let b = Binding {
            repo: &repo,
            kind: ObjectKind::Snapshot,
            container: &zero,
            object: &obj,
            key_id: &key_id,
        };
        let sealed = seal_object(&root, &b, b"hello manifest").unwrap();
        assert_eq!(open_object(&root, &b, &sealed).unwrap(), b"hello manifest");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(
                open_object(&root, &b, &t).is_err(),
                "flip at byte {i} accepted"
            );
        }
        assert_eq!(
            open_object(&root, &b, &sealed[..sealed.len() - 1]),
            Err(OpenError::Unauthentic)
        );
        assert_eq!(
            open_object(&root, &b, &sealed[..10]),
            Err(OpenError::Truncated)
        );
    }

    #[test]
    fn fail_wrong_binding_or_key() {
        let root = Key32::generate().unwrap();
        let other_root = Key32::generate().unwrap();
        let (repo, obj, key_id, other) = ids();
        let zero = Id::default();
        let b = Binding {
            repo: &repo,
            kind: ObjectKind::Index,
            container: &zero,
            object: &obj,
            key_id: &key_id,
        };
        let sealed = seal_object(&root, &b, b"segment").unwrap();
        assert_eq!(
            open_object(&other_root, &b, &sealed),
            Err(OpenError::Commitment)
        );
        let moved = Binding {
            object: &other,
            ..b
        };
        assert_eq!(
            open_object(&root, &moved, &sealed),
            Err(OpenError::Commitment)
        );
        let other_repo = Binding { repo: &other, ..b };
        assert_eq!(
            open_object(&root, &other_repo, &sealed),
            Err(OpenError::Commitment)
        );
        let kind = Binding {
            kind: ObjectKind::Snapshot,
            ..b
        };
        assert!(matches!(
            open_object(&root, &kind, &sealed),
            Err(OpenError::Kind { .. })
        ));
    }

    #[test]
    fn fail_downgrade_and_unknown_algorithm() {
        let root = Key32::generate().unwrap();
        let (repo, obj, key_id, _) = ids();
        let zero = Id::default();
        let b = Binding {
            repo: &repo,
            kind: ObjectKind::Index,
            container: &zero,
            object: &obj,
            key_id: &key_id,
        };
        let sealed = seal_object(&root, &b, b"x").unwrap();
        let mut old = sealed.clone();
        old[4] = 0;
        assert_eq!(open_object(&root, &b, &old), Err(OpenError::Version(0)));
        let mut alg = sealed.clone();
        alg[6] = 9;
        assert_eq!(open_object(&root, &b, &alg), Err(OpenError::Algorithm(9)));
    }

    #[test]
    fn fail_blob_moved_to_another_pack() {
        let root = Key32::generate().unwrap();
        let (repo, pack_a, chunk, key_id) = ids();
        let pack_b = Id::random().unwrap();
        let a = Binding {
            repo: &repo,
            kind: ObjectKind::DataBlob,
            container: &pack_a,
            object: &chunk,
            key_id: &key_id,
        };
        let sealed = seal_blob(&root, &a, &[7u8; 1000]).unwrap();
        assert_eq!(sealed.len(), 1000 + BLOB_OVERHEAD);
        assert_eq!(open_blob(&root, &a, &sealed).unwrap(), vec![7u8; 1000]);
        let b = Binding {
            container: &pack_b,
            ..a
        };
        assert_eq!(open_blob(&root, &b, &sealed), Err(OpenError::Commitment));
        let tree = Binding {
            kind: ObjectKind::TreeBlob,
            ..a
        };
        assert_eq!(open_blob(&root, &tree, &sealed), Err(OpenError::Commitment));
    }

    #[test]
    fn fail_same_key_commitment_but_altered_ciphertext() {
        // The commitment passes, the tag must still catch the change.
        let root = Key32::generate().unwrap();
        let (repo, pack, chunk, key_id) = ids();
        let b = Binding {
            repo: &repo,
            kind: ObjectKind::DataBlob,
            container: &pack,
            object: &chunk,
            key_id: &key_id,
        };
        let mut sealed = seal_blob(&root, &b, b"payload").unwrap();
        let n = sealed.len();
        sealed[n - 20] ^= 0x80;
        assert_eq!(open_blob(&root, &b, &sealed), Err(OpenError::Unauthentic));
        assert_eq!(
            open_blob_in_place(&root, &b, &mut sealed.clone()),
            Err(OpenError::Unauthentic)
        );
    }

    #[test]
    fn in_place_opens_what_a_copy_opens_and_refuses_the_same() {
        let root = Key32::generate().unwrap();
        let (repo, pack, chunk, key_id) = ids();
        let b = Binding {
            repo: &repo,
            kind: ObjectKind::DataBlob,
            container: &pack,
            object: &chunk,
            key_id: &key_id,
        };
        let sealed = seal_blob(&root, &b, b"payload").unwrap();
        assert_eq!(
            open_blob_in_place(&root, &b, &mut sealed.clone()).unwrap(),
            b"payload"
        );
        let tree = Binding {
            kind: ObjectKind::TreeBlob,
            ..b
        };
        assert_eq!(
            open_blob_in_place(&root, &tree, &mut sealed.clone()),
            Err(OpenError::Commitment)
        );
        assert_eq!(
            open_blob_in_place(&root, &b, &mut sealed[..BLOB_OVERHEAD - 1].to_vec()),
            Err(OpenError::Truncated)
        );
    }
}
