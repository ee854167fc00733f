//! Randomness from the operating system (ring's `SystemRandom`); no user-space generator to seed.

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

pub fn fill(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::Unavailable("operating system random generator failed".into()))
}

/// A uniformly random index below `n` (n > 0), by rejection sampling.
pub fn below(n: usize) -> Result<usize> {
    debug_assert!(n > 0);
    let n = n as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let mut b = [0u8; 8];
        fill(&mut b)?;
        let v = u64::from_le_bytes(b);
        if v < zone {
            return Ok((v % n) as usize);
        }
    }
}

/// Fisher-Yates shuffle with OS randomness (pack blob order).
pub fn shuffle<T>(items: &mut [T]) -> Result<()> {
    for i in (1..items.len()).rev() {
        let j = below(i + 1)?;
        items.swap(i, j);
    }
    Ok(())
}
