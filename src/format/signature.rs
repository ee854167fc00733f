//! Signature trailers (docs/FORMAT.md §17): the plaintext of a signed object is its body
//! followed by `"CSG2" || signer public key (32) || Ed25519 signature (64)`, inside the
//! envelope. The signature covers the object's kind, repository and name as well as the body,
//! so a signed object moved to another name, folder or repository does not verify. Pure.

use crate::crypto::signing::{self, SigningKey, SIGNATURE_LEN};
use crate::id::{Id, SignerId};

pub const MAGIC: [u8; 4] = *b"CSG2";
pub const TRAILER_LEN: usize = MAGIC.len() + 32 + SIGNATURE_LEN;
const LABEL: &[u8] = b"custody/v2/signed-object";

/// Why a signed object's trailer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not signed (written by a build without writer provenance, or forged)")]
    Unsigned,
    #[error("signature of {0} does not verify (altered, or moved from another object)")]
    Invalid(String),
}

/// What is signed: label, kind, repository, object id, body length, body.
pub fn message(kind: u8, repo: &Id, object: &Id, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LABEL.len() + 1 + 64 + 8 + body.len());
    m.extend_from_slice(LABEL);
    m.push(kind);
    m.extend_from_slice(repo.as_bytes());
    m.extend_from_slice(object.as_bytes());
    m.extend_from_slice(&(body.len() as u64).to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// `body` with its signature trailer appended.
pub fn sign(key: &SigningKey, kind: u8, repo: &Id, object: &Id, mut body: Vec<u8>) -> Vec<u8> {
    let sig = key.sign(&message(kind, repo, object, &body));
    body.extend_from_slice(&MAGIC);
    body.extend_from_slice(key.id().as_bytes());
    body.extend_from_slice(&sig);
    body
}

/// Splits a signed plaintext into its body and signer, after checking the signature against
/// the signer the trailer names. Whether that signer may write such an object is the
/// caller's decision (the owner's roster, docs/FORMAT.md §17).
pub fn verify(
    kind: u8,
    repo: &Id,
    object: &Id,
    plain: &[u8],
) -> Result<(Vec<u8>, SignerId), SignatureError> {
    let (body, trailer) = plain
        .len()
        .checked_sub(TRAILER_LEN)
        .map(|at| plain.split_at(at))
        .ok_or(SignatureError::Unsigned)?;
    if trailer[..4] != MAGIC {
        return Err(SignatureError::Unsigned);
    }
    let signer = SignerId(Id::from_slice(&trailer[4..36]).ok_or(SignatureError::Unsigned)?);
    if !signing::verify(&signer, &message(kind, repo, object, body), &trailer[36..]) {
        return Err(SignatureError::Invalid(signer.short()));
    }
    Ok((body.to_vec(), signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fail_cases() {
        let k = SigningKey::generate().unwrap();
        let (repo, obj) = (Id([1; 32]), Id([2; 32]));
        let signed = sign(&k, 5, &repo, &obj, b"body".to_vec());
        assert_eq!(signed.len(), 4 + TRAILER_LEN);
        let (body, who) = verify(5, &repo, &obj, &signed).unwrap();
        assert_eq!((body.as_slice(), who), (&b"body"[..], k.id()));
        // fail_: another kind, repository or name; a flipped byte anywhere; no trailer.
        assert!(verify(4, &repo, &obj, &signed).is_err());
        assert!(verify(5, &obj, &obj, &signed).is_err());
        assert!(verify(5, &repo, &repo, &signed).is_err());
        for i in 0..signed.len() {
            let mut b = signed.clone();
            b[i] ^= 0x40;
            assert!(verify(5, &repo, &obj, &b).is_err(), "byte {i}");
        }
        assert_eq!(
            verify(5, &repo, &obj, b"body"),
            Err(SignatureError::Unsigned)
        );
    }
}
