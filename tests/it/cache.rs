//! The local cache of index segments (src/repo/cache.rs): it holds the store's ciphertext,
//! a damaged or swapped entry is never trusted (the store's copy is read instead), and
//! `check` reads the store only, so the cache never hides damage there.

use crate::common::*;

fn cached(sb: &Sandbox, args: &[&str]) -> Run {
    sb.run_env(&[("CUSTODY_CACHE_DIR", sb.path("cache"))], args)
}

/// The cached segments: (store path, cache path) per segment id, in id order.
fn segments(sb: &Sandbox) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    let repo_cache = sb
        .path("cache")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    list_ids(&repo_cache.join("index"))
        .into_iter()
        .map(|id| {
            (
                sb.repo().join("index").join(&id),
                repo_cache.join("index").join(&id),
            )
        })
        .collect()
}

#[test]
fn cached_index_segments_are_verified_and_check_reads_the_store() {
    let sb = Sandbox::new();
    cached(&sb, &["init"]).ok();
    for i in 0..2 {
        write(&sb.path(&format!("src/f{i}")), &random_bytes(50_000, i));
        cached(&sb, &["backup", sb.path("src").to_str().unwrap()]).ok();
    }
    cached(&sb, &["ls", "latest"]).ok();
    let segs = segments(&sb);
    assert_eq!(segs.len(), 2, "both segments cached after a read");
    for (store, cache) in &segs {
        assert_eq!(std::fs::read(store).unwrap(), std::fs::read(cache).unwrap());
    }
    let restore = |name: &str| {
        let out = sb.path(name);
        cached(
            &sb,
            &["restore", "latest", "--target", out.to_str().unwrap()],
        )
        .ok();
        assert_same_tree(&sb.path("src"), &restored(&out, &sb.path("src")));
    };

    // A flipped byte, and one segment's bytes under the other's name: neither opens, the
    // store's copies are read and cached again.
    let (a, b) = (&segs[0], &segs[1]);
    let mut bytes = std::fs::read(&a.1).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&a.1, bytes).unwrap();
    std::fs::copy(&a.0, &b.1).unwrap();
    restore("out1");
    for (store, cache) in &segs {
        assert_eq!(std::fs::read(store).unwrap(), std::fs::read(cache).unwrap());
    }

    // Damage in the store with a good cached copy: readers may use the copy, but `check`
    // reads the store and names the segment.
    let mut bytes = std::fs::read(&a.0).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&a.0, bytes).unwrap();
    restore("out2");
    let check = cached(&sb, &["check"]);
    assert_ne!(check.code, 0, "check trusted the cache: {}", check.stderr);
    let id = a.0.file_name().unwrap().to_string_lossy().into_owned();
    assert!(check.stderr.contains(&id[..8]), "{}", check.stderr);
}
