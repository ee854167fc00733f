//! History scale: what the tamper-evident history (docs/FORMAT.md §18) costs on a repository
//! with many snapshots. Writes N snapshots, each a chained manifest pointing at the tree of the
//! repository's newest snapshot (as N backups of an unchanged folder would), then times the
//! history check every snapshot-listing command makes, with and without a checkpoint.
//!
//! Usage: `cargo run --release --example history_scale -- REPO KEYRING_DIR CONFIG_DIR [N]`
//! on a repository made with `custody init` and one `custody backup`, with
//! `CUSTODY_CONFIG_DIR=CONFIG_DIR` and the owner's keyring in KEYRING_DIR (no passphrase).
//! N defaults to 10,000; a fifth argument `keep` leaves all of them (no forget at the end).
//! Afterwards time `custody check` and `custody snapshots` yourself.

use std::collections::HashSet;
use std::time::Instant;

use custody::keyservice::{self, KeyServiceOptions};
use custody::repo::history::{HistoryOptions, StateFile};
use custody::repo::{Repository, Session};
use custody::store;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (repo_dir, ring, config) = (&args[1], &args[2], &args[3]);
    let n: usize = args.get(4).map_or(10_000, |v| v.parse().expect("N"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = store::open(repo_dir, &Default::default(), rt.handle()).expect("store");
    let config_obj = Repository::read_config(rt.handle(), &store).expect("config");
    let id = config_obj.body.repository;
    let keys = keyservice::open(
        &format!("local:{ring}"),
        &KeyServiceOptions::default(),
        rt.handle(),
    )
    .expect("keyring");
    let repo = Repository::open(rt.handle().clone(), store, keys, config_obj, None)
        .expect("open")
        .with_history(HistoryOptions {
            state: Some(StateFile::new(
                &std::path::Path::new(config).join("history"),
                &id,
            )),
            ..Default::default()
        });
    let (_, base) = repo
        .resolve_snapshot("latest", &Default::default())
        .expect("one snapshot to copy");
    let session = Session::start(&repo).expect("session");
    let t = Instant::now();
    for i in 0..n {
        let slot = repo
            .next_link()
            .expect("link")
            .expect("a signed repository");
        let mut s = base.clone();
        s.time = chrono::Utc::now();
        s.session = session.id;
        s.tags = vec![format!("n{i}")];
        s.chain = Some(slot.link);
        let sid = repo.save_snapshot(&session, &s).expect("save");
        slot.commit(&repo, sid);
    }
    println!(
        "wrote {n} chained snapshots in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let time = |label: &str| {
        let t = Instant::now();
        let h = repo.history().expect("history");
        println!(
            "{label:<28} {:>6} live  history check {:6.2} s  problems {}",
            h.snapshots.len(),
            t.elapsed().as_secs_f64(),
            h.verdict.problems.len()
        );
        h
    };
    // What reading the manifests alone costs (every listing did this before the history).
    let t = Instant::now();
    let ids = repo.snapshot_ids().expect("list");
    for id in &ids {
        repo.load_snapshot(id).expect("manifest");
    }
    println!(
        "{:<28} {:>6} read  manifests alone {:6.2} s",
        "",
        ids.len(),
        t.elapsed().as_secs_f64()
    );
    let h = time("chained, no checkpoint");
    if args.get(5).is_some_and(|a| a == "keep") {
        return;
    }
    // A forget of half of them: the checkpoint lists the other half.
    let gone: HashSet<_> = h.snapshots.iter().step_by(2).map(|(id, _)| *id).collect();
    let cp = repo.write_checkpoint(&h, &gone).expect("checkpoint");
    for id in &gone {
        repo.store()
            .delete(custody::store::FileKind::Snapshot, id)
            .expect("delete");
    }
    let size = repo
        .store()
        .size(custody::store::FileKind::History, &cp)
        .expect("size");
    println!(
        "checkpoint of {} live snapshots: {size} bytes",
        n + 1 - gone.len()
    );
    time("after forgetting half");
}
