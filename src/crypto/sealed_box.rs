//! Sealing a 32-byte key to an X25519 public key (ECIES-style, docs/FORMAT.md §19.3): an
//! ephemeral agreement keys AES-256-GCM, and `info` binds what the key is for, so a sealed
//! key moved to another use does not open. A key holder's approval seals its parts to the
//! restore request's public key this way: only the requester, who keeps the private half,
//! opens them, and the bucket holds them encrypted.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::aead::{self, NONCE_LEN, TAG_LEN};
use super::{kdf, random, Key32};
use crate::error::{Error, Result};

const LABEL: &[u8] = b"custody/v2/sealed-box";
/// `E(32) || nonce(12) || AES-256-GCM(key)(32) || tag(16)`.
pub const SEALED_LEN: usize = 32 + NONCE_LEN + 32 + TAG_LEN;

/// The public half of an X25519 secret.
pub fn public_key(secret: &Key32) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret.expose())).to_bytes()
}

/// `HKDF(salt = E || public, ikm = shared, info = parts...)`.
fn box_key(shared: &[u8; 32], eph: &PublicKey, public: &PublicKey, info: &[&[u8]]) -> Key32 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph.as_bytes());
    salt[32..].copy_from_slice(public.as_bytes());
    let mut out = [0u8; 32];
    kdf::hkdf(&salt, shared, info, &mut out);
    Key32::from_bytes(&mut out)
}

/// The scheme both uses share (here, and the local keyring's data KEK, FORMAT §11.1): an
/// ephemeral X25519 agreement with `public` keys AES-256-GCM through HKDF with `info`;
/// `aad` is authenticated. Returns `E || nonce || ciphertext || tag`.
pub fn seal_with(public: &[u8; 32], info: &[&[u8]], aad: &[u8], key: &Key32) -> Result<Vec<u8>> {
    let public = PublicKey::from(*public);
    let mut eph_bytes = Zeroizing::new([0u8; 32]);
    random::fill(&mut eph_bytes[..])?;
    let eph = StaticSecret::from(*eph_bytes);
    let eph_pub = PublicKey::from(&eph);
    let shared = eph.diffie_hellman(&public);
    if !shared.was_contributory() {
        return Err(Error::invalid("the public key is degenerate"));
    }
    let k = box_key(shared.as_bytes(), &eph_pub, &public, info);
    let mut nonce = [0u8; NONCE_LEN];
    random::fill(&mut nonce)?;
    let mut buf = key.expose().to_vec();
    let tag = aead::seal(&k, &nonce, aad, &mut buf);
    let mut out = eph_pub.to_bytes().to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens what [`seal_with`] sealed; `public` is the public key the salt names (stored, not
/// recomputed, by the keyring). `None` when it does not open.
pub fn open_with(
    secret: &Key32,
    public: &[u8; 32],
    info: &[&[u8]],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Key32> {
    if sealed.len() != SEALED_LEN {
        return None;
    }
    let (eph, rest) = sealed.split_first_chunk::<32>()?;
    let (nonce, body) = rest.split_first_chunk::<NONCE_LEN>()?;
    let sk = StaticSecret::from(*secret.expose());
    let eph_pub = PublicKey::from(*eph);
    let shared = sk.diffie_hellman(&eph_pub);
    if !shared.was_contributory() {
        return None;
    }
    let k = box_key(shared.as_bytes(), &eph_pub, &PublicKey::from(*public), info);
    let mut buf = Zeroizing::new(body.to_vec());
    aead::open(&k, nonce, aad, &mut buf[..]).ok()?;
    Key32::from_slice(&buf[..32])
}

/// Seals `key` to `public`, bound to `info` (a restore request's parts, FORMAT §19.3).
pub fn seal(public: &[u8; 32], info: &[u8], key: &Key32) -> Result<Vec<u8>> {
    seal_with(public, &[LABEL, info], info, key)
}

/// The key `sealed` holds, or `None` when it does not open with `secret` and `info`.
pub fn open(secret: &Key32, info: &[u8], sealed: &[u8]) -> Option<Key32> {
    open_with(secret, &public_key(secret), &[LABEL, info], info, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_its_secret_and_info() {
        let secret = Key32::generate().unwrap();
        let other = Key32::generate().unwrap();
        let key = Key32::generate().unwrap();
        let sealed = seal(&public_key(&secret), b"request A", &key).unwrap();
        assert_eq!(sealed.len(), SEALED_LEN);
        assert_eq!(
            open(&secret, b"request A", &sealed).unwrap().expose(),
            key.expose()
        );
        assert!(open(&other, b"request A", &sealed).is_none());
        assert!(open(&secret, b"request B", &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[50] ^= 1;
        assert!(open(&secret, b"request A", &flipped).is_none());
    }
}
