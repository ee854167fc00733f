//! One conformance suite for every object-store backend (DESIGN section 6). Each backend's
//! test calls `conformance` with a fresh, empty store.

use std::sync::Arc;

use crate::common::conformance::conformance;
use custody::store::LocalStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(LocalStore::new(dir.path().join("repo")))).await;
    // Nothing but objects is left behind: no temporary files from atomic writes.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            assert!(
                !e.file_name().to_string_lossy().starts_with(".tmp"),
                "{:?}",
                e.path()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}
