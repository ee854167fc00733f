//! HKDF-SHA256 sub-key derivation and HMAC-SHA256, each use under its own label.

use ring::{hkdf, hmac};

use super::Key32;

/// Labels that separate every derived key. Changing one is a format change.
pub mod label {
    pub const CHUNK_ID: &[u8] = b"custody/v1/chunk-id";
    pub const GEAR: &[u8] = b"custody/v1/chunker-gear";
    pub const INDEX: &[u8] = b"custody/v1/index";
    pub const SNAPSHOT_ID: &[u8] = b"custody/v1/snapshot-id";
    pub const CONFIG_MAC: &[u8] = b"custody/v1/config-mac";
    pub const PACK: &[u8] = b"custody/v1/pack";
    pub const OBJECT: &[u8] = b"custody/v1/object";
    /// Client side only: seals the local parent cache (docs/FORMAT.md §14a).
    pub const PARENT_CACHE: &[u8] = b"custody/v1/local-parent-cache";
    /// Client side only: seals the owner's cache of opened manifests (docs/FORMAT.md §14a).
    pub const HISTORY_CACHE: &[u8] = b"custody/v2/local-history-cache";
    /// Local keyring: the key that wraps the repository secret under the meta KEK, followed by
    /// the KEK id (docs/FORMAT.md §11.1).
    pub const LOCAL_WRAP: &[u8] = b"custody/v1/local-wrap";
    /// Local keyring: the key that wraps a session key from the X25519 agreement with the data
    /// KEK, followed by the KEK id (docs/FORMAT.md §11.1).
    pub const LOCAL_X25519_WRAP: &[u8] = b"custody/v1/local-x25519-wrap";
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256(salt, ikm) expanded with `info` parts into `out`.
pub fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    // Output lengths used here (32 or 64 bytes) are far below HKDF's 255*32 limit.
    let okm = prk
        .expand(info, Len(out.len()))
        .expect("HKDF output length within limit");
    okm.fill(out).expect("HKDF fill with matching length");
}

/// A 32-byte sub-key derived from `ikm`.
pub fn derive_key(salt: &[u8], ikm: &Key32, info: &[&[u8]]) -> Key32 {
    let mut out = [0u8; 32];
    hkdf(salt, ikm.expose(), info, &mut out);
    Key32::from_bytes(&mut out)
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &Key32, data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let tag = hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// A reusable HMAC key (chunk ids are computed for every chunk: avoid re-keying).
#[derive(Clone)]
pub struct HmacKey(hmac::Key);

impl HmacKey {
    pub fn new(key: &Key32) -> HmacKey {
        HmacKey(hmac::Key::new(hmac::HMAC_SHA256, key.expose()))
    }
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.0, data).as_ref());
        out
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}
