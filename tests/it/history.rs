//! Tamper-evident history (issue #13, docs/FORMAT.md §18), played from outside: the custodian
//! edits objects in the store (local folder, or the s3s-fs server's folder) and clients see
//! only what the CLI prints. Rollback of `snapshots/` and `index/` after a newer state was
//! seen, with and without the client's own state and with a witness; a deleted snapshot;
//! a snapshot withheld across two prunes; forgotten snapshots put back; two writers at once.

use std::path::{Path, PathBuf};

use crate::common::backend::{both, Repo};
use crate::common::*;
use custody::repo::check::CheckReport;
use custody::repo::snapshots::SnapshotTable;

/// Copies a folder (the custodian keeps an old state of the bucket).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Puts an old copy of `dir` back in place of the current one.
fn put_back(saved: &Path, dir: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
    copy_dir(saved, dir);
}

/// The object file of snapshot `id` in the store.
fn snapshot_file(r: &Repo, id: &str) -> PathBuf {
    let p = r.store_dir().join("snapshots").join(id);
    assert!(p.exists(), "{} not in the store", p.display());
    p
}

fn listed(r: &Repo, extra: &[(&'static str, String)]) -> Vec<String> {
    let t: SnapshotTable = r.run_with(extra, &["--json", "snapshots"]).ok().report();
    t.0.iter().map(|s| s.id.to_hex()).collect()
}

fn pack_count(r: &Repo) -> usize {
    list_ids(&r.store_dir().join("data")).len()
}

fn rollback_detected_and_accepted(r: &Repo) {
    r.init();
    let a = r.source("a", 3, 1, None);
    let b = r.source("b", 3, 2, None);
    let sa = r.backup(&a);
    let old = r.sb.path("custodian-copy");
    copy_dir(&r.store_dir().join("snapshots"), &old.join("snapshots"));
    copy_dir(&r.store_dir().join("index"), &old.join("index"));
    let sb = r.backup(&b);
    assert_eq!(listed(r, &[]), vec![sa.clone(), sb.clone()]);

    // The custodian serves the old snapshots/ and index/.
    put_back(&old.join("snapshots"), &r.store_dir().join("snapshots"));
    put_back(&old.join("index"), &r.store_dir().join("index"));
    for args in [
        &["snapshots"][..],
        &["restore", "latest", "--target", "/nonexistent-target"],
        &["ls", "latest"],
        &["dump", "latest", "b/f000"],
        &["forget", "--keep-last", "1"],
        &["backup", b.to_str().unwrap()],
    ] {
        let out = r.run(args).code(EXIT_INTEGRITY);
        assert!(
            out.stderr.contains("rollback detected") && out.stderr.contains(&sb),
            "{args:?}: {}",
            out.stderr
        );
    }
    let packs = pack_count(r);
    let out = r.run(&["prune", "--grace", "0s"]).code(EXIT_INTEGRITY);
    assert!(out.stderr.contains("rollback"), "{}", out.stderr);
    r.run(&["prune", "--grace", "0s"]).code(EXIT_INTEGRITY);
    assert_eq!(pack_count(r), packs, "a refused prune deleted packs");
    let chk: CheckReport = r.run(&["--json", "check"]).code(EXIT_INTEGRITY).report();
    assert!(
        chk.problems
            .iter()
            .any(|p| p.message.starts_with("rollback") && p.object.contains(&sb)),
        "{chk:?}"
    );

    // A preview of the acceptance: it holds for that run, and nothing records it.
    let history = r.store_dir().join("history");
    let checkpoints = || match history.exists() {
        true => list_ids(&history).len(),
        false => 0,
    };
    let before = checkpoints();
    for args in [
        &[
            "--accept-rollback",
            "forget",
            "--keep-last",
            "1",
            "--dry-run",
        ][..],
        &["--accept-rollback", "prune", "--dry-run"],
    ] {
        let out = r.run(args).ok();
        assert!(
            out.stderr.contains("for this run only") && out.stderr.contains(&sb),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert_eq!(checkpoints(), before, "a dry run recorded the acceptance");
    let out = r.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(out.stderr.contains("rollback detected"), "{}", out.stderr);

    // A deliberate restore of an old copy: accepted, and said what was accepted.
    let out = r.run(&["--accept-rollback", "snapshots"]).ok();
    assert!(
        out.stderr.contains("rollback accepted") && out.stderr.contains(&sb),
        "{}",
        out.stderr
    );
    assert_eq!(listed(r, &[]), vec![sa.clone()]);
    r.check();
    // The chain goes on from there; the next backup restores.
    let c = r.source("c", 2, 3, None);
    let sc = r.backup(&c);
    assert_eq!(listed(r, &[]), vec![sa, sc]);
    assert_eq!(r.restore_all(), 2);
    assert!(r.check().problems.is_empty());
}

#[test]
fn a_rollback_is_detected_and_can_be_accepted() {
    both(rollback_detected_and_accepted);
}

fn witness_for_fresh_clients(r: &Repo) {
    let witness = match r.server() {
        // A second bucket (a witness at another provider, in production).
        Some(s) => {
            std::fs::create_dir_all(s.dir.path().join("witness-bucket")).unwrap();
            "s3://witness-bucket/custody".to_string()
        }
        None => r.sb.path("witness").display().to_string(),
    };
    let w = [("CUSTODY_WITNESS", witness)];
    r.init();
    let a = r.source("a", 3, 1, None);
    let b = r.source("b", 3, 2, None);
    r.run_with(&w, &["backup", a.to_str().unwrap()]).ok();
    let old = r.sb.path("custodian-copy");
    copy_dir(&r.store_dir().join("snapshots"), &old);
    let out = r
        .run_with(&w, &["--json", "backup", b.to_str().unwrap()])
        .ok();
    let sb = out.json()["snapshot_id"].as_str().unwrap().to_string();
    put_back(&old, &r.store_dir().join("snapshots"));

    // This client's own state is lost: without the witness the rollback is not seen...
    std::fs::remove_dir_all(r.sb.path("config/history")).unwrap();
    assert_eq!(listed(r, &[]).len(), 1);
    std::fs::remove_dir_all(r.sb.path("config/history")).unwrap();
    // ... with it, it is.
    let out = r.run_with(&w, &["snapshots"]).code(EXIT_INTEGRITY);
    assert!(
        out.stderr.contains("rollback detected") && out.stderr.contains(&sb),
        "{}",
        out.stderr
    );
    // A writer cannot blind the witness: a junk record and a record signed by a key nobody
    // enrolled are skipped, and the rollback is still seen.
    if r.server().is_none() {
        let dir = r.sb.path("witness/witness");
        write(&dir.join("00".repeat(32)), b"{\"junk\": true}");
    }
    r.run_with(&w, &["snapshots"]).code(EXIT_INTEGRITY);
}

#[test]
fn a_witness_shows_a_rollback_to_a_client_that_lost_its_state() {
    both(witness_for_fresh_clients);
}

fn deleted_and_forgotten(r: &Repo) {
    r.init();
    let ids: Vec<String> = (0..3)
        .map(|i| r.backup(&r.source(&format!("s{i}"), 2, 10 + i as u64, None)))
        .collect();
    // The middle one is deleted: named, by any client (its successor names it).
    let f = snapshot_file(r, &ids[1]);
    let saved = std::fs::read(&f).unwrap();
    std::fs::remove_file(&f).unwrap();
    std::fs::remove_dir_all(r.sb.path("config/history")).unwrap();
    let chk: CheckReport = r.run(&["--json", "check"]).code(EXIT_INTEGRITY).report();
    let p = chk
        .problems
        .iter()
        .find(|p| p.object.contains(&ids[1]))
        .unwrap_or_else(|| panic!("{chk:?}"));
    assert!(
        p.message.contains("missing") && !p.message.starts_with("rollback"),
        "{p:?}"
    );
    // `snapshots` lists the others and names it; restores of intact snapshots work.
    let out = r.run(&["--json", "snapshots"]).code(EXIT_INTEGRITY);
    let t: SnapshotTable = out.report();
    assert_eq!(t.0.len(), 2);
    assert!(out.stderr.contains(&ids[1]), "{}", out.stderr);
    let target = r.sb.path("restored-latest");
    r.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    // Forget refuses to act on a store that lacks a snapshot.
    r.run(&["forget", "--keep-last", "1"]).code(EXIT_INTEGRITY);
    std::fs::write(&f, &saved).unwrap();
    assert!(r.check().problems.is_empty());

    // Forgotten by forget: not missing. Put back by the custodian: not listed, not counted.
    let fo = r
        .run(&["--json", "forget", "--keep-last", "1", "--group-by", ""])
        .ok();
    assert!(fo.out().contains(&ids[0]));
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(chk.snapshots, 1);
    std::fs::write(&f, &saved).unwrap();
    assert_eq!(listed(r, &[]), vec![ids[2].clone()]);
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(chk.forgotten.len(), 1, "{chk:?}");
    // The next forget deletes it for good.
    r.run(&["forget", "--keep-last", "1", "--group-by", ""])
        .ok();
    assert!(!f.exists());
    // The newest snapshot deleted: the checkpoint that kept it names it, for any client.
    std::fs::remove_file(snapshot_file(r, &ids[2])).unwrap();
    std::fs::remove_dir_all(r.sb.path("config/history")).unwrap();
    let out = r.run(&["check"]).code(EXIT_INTEGRITY);
    assert!(
        out.stderr.contains(&ids[2]) && out.stderr.contains("checkpoint"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_deleted_snapshot_is_named_and_a_forgotten_one_stays_forgotten() {
    both(deleted_and_forgotten);
}

fn withheld_across_prunes(r: &Repo) {
    r.init();
    let a = r.source("a", 3, 21, None);
    let b = r.source("b", 3, 22, None);
    let c = r.source("c", 3, 23, None);
    let sa = r.backup(&a);
    let sb = r.backup(&b);
    let sc = r.backup(&c);
    let packs = pack_count(r);
    // The middle snapshot is withheld from a client that never saw it (fresh state), the
    // newest from the client that made it: each prune refuses, twice, and deletes nothing.
    for (id, fresh) in [(&sb, true), (&sc, false)] {
        let f = snapshot_file(r, id);
        let hidden = r.sb.path("hidden");
        std::fs::rename(&f, &hidden).unwrap();
        for _ in 0..2 {
            if fresh {
                let _ = std::fs::remove_dir_all(r.sb.path("config/history"));
            }
            let out = r.run(&["prune", "--grace", "0s"]).code(EXIT_INTEGRITY);
            assert!(out.stderr.contains(id.as_str()), "{}", out.stderr);
        }
        assert_eq!(pack_count(r), packs);
        std::fs::rename(&hidden, &f).unwrap();
    }
    r.run(&["prune", "--grace", "0s"]).ok();
    assert_eq!(listed(r, &[]), vec![sa, sb, sc]);
    assert_eq!(r.restore_all(), 3);
    assert!(r.check().problems.is_empty());
}

#[test]
fn a_snapshot_withheld_across_two_prunes_keeps_its_data() {
    both(withheld_across_prunes);
}

fn concurrent_writers(r: &Repo) {
    r.init();
    let export = |name: &str| {
        let dir = r.sb.path(name);
        r.run(&[
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            dir.to_str().unwrap(),
        ])
        .ok();
        dir
    };
    let (w1, w2) = (export("w1"), export("w2"));
    let srcs: Vec<PathBuf> = (0..3)
        .map(|i| r.source(&format!("c{i}"), 2, 30 + i, None))
        .collect();
    // Two writers, and one of them twice at once: every backup takes its own place.
    let mut children = Vec::new();
    for round in 0..2 {
        for (w, src) in [(&w1, &srcs[0]), (&w2, &srcs[1]), (&w1, &srcs[2])] {
            let ks = format!("local:{}", w.display());
            let mut c = r.sb.cmd(&[
                "--key-service",
                &ks,
                "backup",
                "--host",
                "h",
                src.to_str().unwrap(),
            ]);
            for (k, v) in r.env() {
                c.env(k, v);
            }
            children.push(c.output_async());
        }
        for c in children.drain(..) {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!((chk.snapshots, chk.chains), (6, 2), "{chk:?}");
    // Deleting any one is noticed by a reader with no state of its own.
    let t: SnapshotTable = r.run(&["--json", "snapshots"]).ok().report();
    let first = t.0[0].id.to_hex();
    std::fs::remove_file(snapshot_file(r, &first)).unwrap();
    std::fs::remove_dir_all(r.sb.path("config/history")).unwrap();
    let out = r.run(&["check"]).code(EXIT_INTEGRITY);
    assert!(out.stderr.contains(&first), "{}", out.stderr);
}

#[test]
fn concurrent_writers_extend_their_chains() {
    both(concurrent_writers);
}

/// Spawns a command with piped output (a small helper for running several at once).
trait SpawnPiped {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnPiped for std::process::Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn custody")
    }
}

fn reencrypted_writers_keep_their_chains(r: &Repo) {
    r.init();
    let w = r.sb.path("w");
    r.run(&[
        "key",
        "export",
        "--role",
        "writer",
        "--to",
        w.to_str().unwrap(),
    ])
    .ok();
    let ks = format!("local:{}", w.display());
    for i in 0..2 {
        let src = r.source(&format!("s{i}"), 2, 70 + i, None);
        r.run(&["--key-service", &ks, "backup", src.to_str().unwrap()])
            .ok();
    }
    assert_eq!(listed(r, &[]).len(), 2);
    // The owner seals every manifest again, signing the writer's with its own key.
    r.run(&["rotate", "reencrypt", "--all"]).ok();
    assert_eq!(listed(r, &[]).len(), 2);
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    // The writer's chain goes on.
    let src = r.source("s9", 2, 79, None);
    r.run(&["--key-service", &ks, "backup", src.to_str().unwrap()])
        .ok();
    assert!(r.check().problems.is_empty());
}

#[test]
fn rotate_reencrypt_keeps_writers_chains() {
    both(reencrypted_writers_keep_their_chains);
}

fn damaged_manifest_survives_forget(r: &Repo) {
    r.init();
    let ids: Vec<String> = (0..3)
        .map(|i| r.backup(&r.source(&format!("s{i}"), 2, 90 + i as u64, None)))
        .collect();
    // The middle manifest is damaged (or replaced) for a while: forget keeps it...
    let f = snapshot_file(r, &ids[1]);
    let good = std::fs::read(&f).unwrap();
    let mut bad = good.clone();
    bad[60] ^= 1;
    std::fs::write(&f, &bad).unwrap();
    r.run(&["forget", "--keep-last", "1", "--group-by", ""])
        .code(EXIT_INTEGRITY);
    assert!(f.exists());
    // ... and once it is put back (bucket versions), it is a snapshot again, which the next
    // forget counts instead of deleting as forgotten.
    std::fs::write(&f, &good).unwrap();
    let now = listed(r, &[]);
    assert!(now.contains(&ids[1]), "{now:?}");
    let out = r
        .run(&["--json", "forget", "--keep-last", "2", "--group-by", ""])
        .ok();
    assert!(f.exists(), "{}", out.out());
    assert!(listed(r, &[]).contains(&ids[1]));
}

#[test]
fn a_damaged_manifest_is_kept_by_forget_until_it_is_put_back() {
    both(damaged_manifest_survives_forget);
}
