//! Ed25519 signatures (ring): every object a writer or the owner stores is signed, so that a
//! key holder can tell who wrote it (docs/FORMAT.md §17). Pure: no I/O.

use std::fmt;

use ring::signature::{self, Ed25519KeyPair, KeyPair};

use super::Key32;
use crate::error::{Error, Result};
use crate::id::{Id, SignerId};

pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 key pair made from a 32-byte seed. The seed is kept (zeroed on drop) so that it
/// can be sealed again; `Debug` prints only the public key.
pub struct SigningKey {
    seed: Key32,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    pub fn generate() -> Result<SigningKey> {
        SigningKey::from_seed(Key32::generate()?)
    }

    pub fn from_seed(seed: Key32) -> Result<SigningKey> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.expose())
            .map_err(|_| Error::Internal("Ed25519 seed refused".into()))?;
        Ok(SigningKey { seed, pair })
    }

    pub fn seed(&self) -> &Key32 {
        &self.seed
    }

    /// The public key, which is also the signer's id.
    pub fn id(&self) -> SignerId {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        SignerId(Id(pk))
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.id().short())
    }
}

/// Whether `sig` is `signer`'s signature of `msg`.
pub fn verify(signer: &SignerId, msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, signer.as_bytes())
        .verify(msg, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_fail_cases() {
        let k = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let sig = k.sign(b"message");
        assert!(verify(&k.id(), b"message", &sig));
        assert!(!verify(&k.id(), b"messagE", &sig));
        assert!(!verify(&other.id(), b"message", &sig));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!verify(&k.id(), b"message", &bad));
        // Same seed, same key: the owner's key is recovered from its sealed seed.
        let again = SigningKey::from_seed(k.seed().clone()).unwrap();
        assert_eq!(again.id(), k.id());
        assert!(!format!("{k:?}").contains(&hex::encode(k.seed().expose())));
    }
}
