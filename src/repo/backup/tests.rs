//! The pipeline end to end, with a defer limit small enough that eager folder encoding runs.

use std::sync::Arc;

use super::*;
use crate::keyservice::LocalKeyring;
use crate::repo::restore::{restore, RestoreOptions, RestoreProgress};
use crate::repo::InitOptions;
use crate::store::LocalStore;

/// A full backup and restore through the pipeline with a tiny defer limit, so eager
/// encoding of finished folders runs alongside deferred ones.
#[test]
fn pipeline_round_trip_with_eager_folder_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in 0..6 {
        for f in 0..12 {
            let p = src.join(format!("d{d}/sub{}/f{f}", f % 3));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("{d}/{f}").repeat(f * 1000 + 1)).unwrap();
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = Arc::new(LocalKeyring::create(&dir.path().join("ring"), None).unwrap());
    let store = Arc::new(LocalStore::new(dir.path().join("repo")));
    let opts = InitOptions {
        pack_size: 1 << 20,
        ..InitOptions::default()
    };
    let repo = Repository::init(
        rt.handle().clone(),
        store,
        keys,
        crate::Id::random().unwrap(),
        &opts,
    )
    .unwrap();
    let report = backup(
        &repo,
        BackupOptions {
            source: Source::Paths(vec![src.clone()]),
            host: "h".into(),
            tags: vec![],
            parent: None,
            parent_cache: None,
            force: false,
            username: "u".into(),
            workers: 2,
            uploads: 2,
            no_dedup_below: 0,
            select: Default::default(),
            dry_run: false,
            checkpoints: Default::default(),
            compression: Default::default(),
            base: None,
        },
        &Progress::default(),
    )
    .unwrap();
    assert_eq!(report.snapshot.summary.files, 72);
    let index = repo.load_index().unwrap();
    let out = dir.path().join("out");
    let r = restore(
        &repo,
        &index,
        &report.snapshot,
        &RestoreOptions {
            target: out.clone(),
            threads: 2,
            ..Default::default()
        },
        &RestoreProgress::default(),
    )
    .unwrap();
    assert!(r.failed.is_empty());
    for d in 0..6 {
        for f in 0..12 {
            // Restored at its full path (docs/FORMAT.md §8).
            let rel = format!("d{d}/sub{}/f{f}", f % 3);
            let at = out.join(src.strip_prefix("/").unwrap()).join(&rel);
            assert_eq!(
                std::fs::read(at).unwrap(),
                format!("{d}/{f}").repeat(f * 1000 + 1).into_bytes(),
                "{rel}"
            );
        }
    }
}
