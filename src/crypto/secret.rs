//! Secret key material. Never `Copy`, zeroed on drop, and `Debug` prints no bytes.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::random;
use crate::error::Result;

/// A 256-bit secret key (DEK, repository secret, KEK, derived sub-key).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl Key32 {
    pub fn generate() -> Result<Key32> {
        let mut k = Key32([0u8; 32]);
        random::fill(&mut k.0)?;
        Ok(k)
    }

    /// Takes ownership of the bytes and zeroes the caller's copy.
    pub fn from_bytes(bytes: &mut [u8; 32]) -> Key32 {
        let k = Key32(*bytes);
        bytes.zeroize();
        k
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Key32> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Key32(arr))
    }

    /// Access for the crypto code that needs the raw bytes; keep the borrow short.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32(<redacted>)")
    }
}

impl PartialEq for Key32 {
    /// Constant-time comparison: keys are compared in tests and rotation checks only.
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}
impl Eq for Key32 {}
