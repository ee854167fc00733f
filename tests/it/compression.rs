//! `backup --compression auto|fast|max|off` (README "Compression", docs/FORMAT.md §13): each
//! mode stores what it says, read back from the index as a key holder sees it, and every mode
//! restores byte for byte.

use std::path::PathBuf;

use crate::common::*;

/// Prose-like text: words from a skewed vocabulary, so that zstd's levels differ.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let noise = random_bytes(len, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        let r = u16::from_le_bytes([noise[i % len], noise[(i + 1) % len]]) as u64;
        let word = (r * r / 65_536) % 3_000;
        out.extend_from_slice(
            format!(
                "w{}{} ",
                word * 7919 % 9973,
                &"abcdef"[..(word % 6) as usize]
            )
            .as_bytes(),
        );
        i += 2;
    }
    out.truncate(len);
    out
}

/// A folder with 3 MiB of text and 1 MiB of random bytes.
fn source(sb: &Sandbox) -> PathBuf {
    let src = sb.path("src");
    write(&src.join("notes.txt"), &text(3 << 20, 11));
    write(&src.join("random.bin"), &random_bytes(1 << 20, 12));
    src
}

/// Every data blob's (compression, raw length, stored length), from `cat index`.
fn data_blobs(sb: &Sandbox) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for seg in list_ids(&sb.repo().join("index")) {
        let v = sb.run(&["cat", "index", &seg]).ok().json();
        for p in v["packs"].as_array().unwrap() {
            for b in p["blobs"].as_array().unwrap() {
                if b["type"] == "data" {
                    out.push((
                        b["compression"].as_str().unwrap().to_string(),
                        b["raw_length"].as_u64().unwrap(),
                        b["length"].as_u64().unwrap(),
                    ));
                }
            }
        }
    }
    out
}

/// Backs the source up in a new repository with `mode` (through the flag, or the environment
/// for `max`), checks the restore, and returns the data blobs.
fn backup_with(mode: &str) -> Vec<(String, u64, u64)> {
    let sb = Sandbox::new();
    sb.init();
    let src = source(&sb);
    if mode == "max" {
        sb.run_env(
            &[("CUSTODY_COMPRESSION", "max")],
            &["backup", src.to_str().unwrap()],
        )
        .ok();
    } else {
        sb.run(&["backup", "--compression", mode, src.to_str().unwrap()])
            .ok();
    }
    let out = sb.path("out");
    sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out, &src));
    sb.run(&["check", "--read-data"]).ok();
    data_blobs(&sb)
}

/// Bytes stored for the text's blobs (the compressed ones, or all of them when off).
fn text_bytes(blobs: &[(String, u64, u64)], off: bool) -> u64 {
    blobs
        .iter()
        .filter(|(c, _, _)| off || c == "zstd")
        .map(|(_, _, len)| len)
        .sum()
}

#[test]
fn each_mode_stores_what_it_says_and_restores_exactly() {
    let off = backup_with("off");
    assert!(off.iter().all(|(c, _, _)| c == "none"), "{off:?}");
    let raw: u64 = off.iter().map(|(_, raw, _)| raw).sum();
    assert_eq!(raw, 4 << 20);

    let mut sizes = Vec::new();
    for mode in ["fast", "auto", "max"] {
        let blobs = backup_with(mode);
        // The random file's chunks are stored raw (the probe or zstd finds nothing to gain),
        // the text's compressed.
        let raw_stored: u64 = blobs
            .iter()
            .filter(|(c, _, _)| c == "none")
            .map(|(_, raw, _)| raw)
            .sum();
        assert_eq!(raw_stored, 1 << 20, "{mode}: {blobs:?}");
        let text = text_bytes(&blobs, false);
        assert!(text < (3 << 20) / 2, "{mode}: text stored in {text} bytes");
        sizes.push((mode, text));
    }
    // Harder modes store the text smaller.
    assert!(sizes[0].1 > sizes[1].1, "{sizes:?}");
    assert!(sizes[1].1 > sizes[2].1, "{sizes:?}");
    assert!(text_bytes(&off, true) > sizes[0].1);
}

#[test]
fn fail_an_unknown_mode_is_a_usage_error() {
    let sb = Sandbox::new();
    sb.init();
    let src = source(&sb);
    let run = sb
        .run(&["backup", "--compression", "best", src.to_str().unwrap()])
        .code(2);
    assert!(run.stderr.contains("auto"), "{}", run.stderr);
    assert!(run.stderr.contains("max"), "{}", run.stderr);
    assert!(list_ids(&sb.repo().join("snapshots")).is_empty());
}
