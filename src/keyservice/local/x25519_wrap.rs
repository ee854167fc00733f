//! The data KEK's wrapping scheme, `local-x25519-hkdf-aes256gcm-v1` (docs/FORMAT.md §11.1),
//! ECIES-style: an ephemeral X25519 agreement with the KEK's public half keys AES-256-GCM.
//! Wrapping needs only the public half, so a writer keyring, which holds no data secret, wraps
//! fresh session keys but never unwraps one: write-only is cryptographic.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::wrap_aad;
use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::crypto::{kdf, random, Key32};
use crate::error::{Error, Result};
use crate::format::wrapped::Context;

pub(super) const ALGORITHM: &str = "local-x25519-hkdf-aes256gcm-v1";
/// `E(32) || nonce(12) || AES-256-GCM(key)(32) || tag(16)`, `E` the ephemeral public key.
pub(super) const WRAPPED_LEN: usize = 32 + NONCE_LEN + 32 + TAG_LEN;

/// The public half of a data KEK: X25519(secret, 9). The secret is stored as generated;
/// X25519 clamps it when used.
pub(super) fn public_key(secret: &Key32) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret.expose())).to_bytes()
}

/// HKDF(salt = E || public, ikm = the shared secret, info = label || KEK id).
fn wrapping_key(shared: &[u8; 32], eph: &PublicKey, public: &PublicKey, kek_id: &str) -> Key32 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph.as_bytes());
    salt[32..].copy_from_slice(public.as_bytes());
    let mut out = [0u8; 32];
    kdf::hkdf(
        &salt,
        shared,
        &[kdf::label::LOCAL_X25519_WRAP, kek_id.as_bytes()],
        &mut out,
    );
    Key32::from_bytes(&mut out)
}

/// Wraps `key` to the data KEK's public half (the KEK named `kek_id`), bound to `ctx`.
pub(super) fn wrap(public: &[u8; 32], kek_id: &str, key: &Key32, ctx: &Context) -> Result<Vec<u8>> {
    let public = PublicKey::from(*public);
    let mut eph_bytes = Zeroizing::new([0u8; 32]);
    random::fill(&mut eph_bytes[..])?;
    let eph = StaticSecret::from(*eph_bytes);
    let eph_pub = PublicKey::from(&eph);
    let shared = eph.diffie_hellman(&public);
    if !shared.was_contributory() {
        return Err(Error::invalid("data KEK public key is degenerate"));
    }
    let wk = wrapping_key(shared.as_bytes(), &eph_pub, &public, kek_id);
    let mut nonce = [0u8; NONCE_LEN];
    random::fill(&mut nonce)?;
    let mut buf = key.expose().to_vec();
    let tag = aead::seal(&wk, &nonce, &wrap_aad(kek_id, ctx), &mut buf);
    let mut ct = eph_pub.to_bytes().to_vec();
    ct.extend_from_slice(&nonce);
    ct.extend_from_slice(&buf);
    ct.extend_from_slice(&tag);
    Ok(ct)
}

/// The key `wrapped` holds, or `None` when it does not open under this key pair and context
/// (altered, a non-contributory `E`, or bound to another repository, purpose or key id). The
/// salt takes the keyring's stored `public`, not one recomputed from the secret.
pub(super) fn unwrap(
    secret: &Key32,
    public: &[u8; 32],
    kek_id: &str,
    wrapped: &[u8],
    ctx: &Context,
) -> Option<Key32> {
    if wrapped.len() != WRAPPED_LEN {
        return None;
    }
    let (eph, rest) = wrapped.split_first_chunk::<32>()?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
    let sk = StaticSecret::from(*secret.expose());
    let eph_pub = PublicKey::from(*eph);
    let shared = sk.diffie_hellman(&eph_pub);
    if !shared.was_contributory() {
        return None;
    }
    let wk = wrapping_key(
        shared.as_bytes(),
        &eph_pub,
        &PublicKey::from(*public),
        kek_id,
    );
    let mut buf = Zeroizing::new(sealed.to_vec());
    aead::open(&wk, nonce, &wrap_aad(kek_id, ctx), &mut buf[..]).ok()?;
    Key32::from_slice(&buf[..32])
}
