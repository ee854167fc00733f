//! Pure cryptography: no I/O, no async. Keys are zeroized on drop and never printed.

pub mod aead;
pub mod envelope;
pub mod kdf;
pub mod random;
pub mod sealed_box;
pub mod secret;
pub mod signing;

pub use secret::Key32;
