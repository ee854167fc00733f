//! The meta KEK's wrapping scheme, `local-aes256gcm-v1` (docs/FORMAT.md §11.1): the repository
//! secret sealed with AES-256-GCM under a key derived from the 32-byte meta KEK and its id.
//! Wrapping and unwrapping both need the KEK secret, which owner and writer keyrings hold
//! alike: a writer needs the repository secret to chunk and deduplicate.

use zeroize::Zeroizing;

use super::wrap_aad;
use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::crypto::{kdf, random, Key32};
use crate::error::Result;
use crate::format::wrapped::Context;

pub(super) const ALGORITHM: &str = "local-aes256gcm-v1";
/// `nonce(12) || AES-256-GCM(key)(32) || tag(16)`.
pub(super) const WRAPPED_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// HKDF(salt = "", ikm = the meta KEK, info = label || KEK id).
fn wrapping_key(kek: &Key32, kek_id: &str) -> Key32 {
    kdf::derive_key(b"", kek, &[kdf::label::LOCAL_WRAP, kek_id.as_bytes()])
}

/// Wraps `key` under the meta KEK `kek` (named `kek_id`), bound to `ctx`.
pub(super) fn wrap(kek: &Key32, kek_id: &str, key: &Key32, ctx: &Context) -> Result<Vec<u8>> {
    let wk = wrapping_key(kek, kek_id);
    let mut nonce = [0u8; NONCE_LEN];
    random::fill(&mut nonce)?;
    let mut buf = key.expose().to_vec();
    let tag = aead::seal(&wk, &nonce, &wrap_aad(kek_id, ctx), &mut buf);
    let mut ct = nonce.to_vec();
    ct.extend_from_slice(&buf);
    ct.extend_from_slice(&tag);
    Ok(ct)
}

/// The key `wrapped` holds, or `None` when it does not open under this KEK and context
/// (altered, another KEK, or bound to another repository, purpose or key id).
pub(super) fn unwrap(kek: &Key32, kek_id: &str, wrapped: &[u8], ctx: &Context) -> Option<Key32> {
    if wrapped.len() != WRAPPED_LEN {
        return None;
    }
    let (nonce, sealed) = wrapped.split_first_chunk::<NONCE_LEN>()?;
    let wk = wrapping_key(kek, kek_id);
    let mut buf = Zeroizing::new(sealed.to_vec());
    aead::open(&wk, nonce, &wrap_aad(kek_id, ctx), &mut buf[..]).ok()?;
    Key32::from_slice(&buf[..32])
}
