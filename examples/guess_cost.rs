//! What a writer pays to confirm a guess of a small file (docs/THREAT-MODEL.md §4): one
//! HMAC-SHA256 of the guessed bytes under `K_id` and one lookup in the decrypted index. Builds
//! an index of N random chunk ids (a repository's worth), then times every 6-digit PIN in a
//! one-line file, as an attacker would enumerate them.
//!
//! Usage: cargo run --release --example guess_cost -- [INDEX_ENTRIES=1000000]

use std::collections::HashSet;
use std::time::Instant;

use custody::crypto::kdf::HmacKey;
use custody::crypto::Key32;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let key = HmacKey::new(&Key32::generate().expect("random key"));
    let index: HashSet<[u8; 32]> = (0..n as u64).map(|i| key.sign(&i.to_le_bytes())).collect();
    let secret = format!("{:06}\n", 738_519);
    let mut index = index;
    index.insert(key.sign(secret.as_bytes()));
    let start = Instant::now();
    let mut found = Vec::new();
    let guesses = 1_000_000u64;
    for pin in 0..guesses {
        let guess = format!("{pin:06}\n");
        if index.contains(&key.sign(guess.as_bytes())) {
            found.push(guess);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "index of {n} chunk ids: {guesses} guesses in {secs:.2} s ({:.0} guesses/s, {:.2} µs each); confirmed {:?}",
        guesses as f64 / secs,
        secs * 1e6 / guesses as f64,
        found
    );
}
