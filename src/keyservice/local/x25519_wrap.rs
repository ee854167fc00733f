//! The data KEK's wrapping scheme, `local-x25519-hkdf-aes256gcm-v1` (docs/FORMAT.md §11.1),
//! ECIES-style: an ephemeral X25519 agreement with the KEK's public half keys AES-256-GCM.
//! Wrapping needs only the public half, so a writer keyring, which holds no data secret, wraps
//! fresh session keys but never unwraps one: write-only is cryptographic.

use x25519_dalek::{PublicKey, StaticSecret};

use super::wrap_aad;
use crate::crypto::aead::{NONCE_LEN, TAG_LEN};
use crate::crypto::{kdf, sealed_box, Key32};
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

/// Wraps `key` to the data KEK's public half (the KEK named `kek_id`), bound to `ctx`:
/// `HKDF(salt = E || public, ikm = shared, info = label || KEK id)` keys AES-256-GCM with
/// the wrap AAD (the scheme of [`sealed_box::seal_with`]).
pub(super) fn wrap(public: &[u8; 32], kek_id: &str, key: &Key32, ctx: &Context) -> Result<Vec<u8>> {
    sealed_box::seal_with(
        public,
        &[kdf::label::LOCAL_X25519_WRAP, kek_id.as_bytes()],
        &wrap_aad(kek_id, ctx),
        key,
    )
    .map_err(|e| match e {
        Error::Invalid(_) => Error::invalid("data KEK public key is degenerate"),
        e => e,
    })
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
    sealed_box::open_with(
        secret,
        public,
        &[kdf::label::LOCAL_X25519_WRAP, kek_id.as_bytes()],
        &wrap_aad(kek_id, ctx),
        wrapped,
    )
}
