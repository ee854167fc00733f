//! AES-256-GCM through ring (hardware AES where the CPU has it). 96-bit nonces, 128-bit tags.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::Key32;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// AEAD failure: the tag did not verify. Carries nothing about the key or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

fn key(k: &Key32) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, k.expose()).expect("32-byte AES key"))
}

/// Encrypts `in_out` in place and returns the tag.
pub fn seal(k: &Key32, nonce: &[u8; NONCE_LEN], aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
    let tag = key(k)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), in_out)
        .expect("AES-GCM seal within message size limit");
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Decrypts `ct || tag` in place; returns the plaintext length on success.
pub fn open(
    k: &Key32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<usize, Unauthentic> {
    let pt = key(k)
        .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), in_out)
        .map_err(|_| Unauthentic)?;
    Ok(pt.len())
}
