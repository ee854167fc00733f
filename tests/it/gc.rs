//! Retention, garbage collection, concurrent writers and crash safety (issue #7), on the
//! local store and on s3s-fs: forget by policy, two-phase prune with a grace period, four
//! backups at once, prune while backups run (and while one is paused with SIGSTOP past the
//! grace period), and SIGKILL at the moments between writes that matter.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::backend::{both, Repo};
use crate::common::*;
use custody::repo::forget::ForgetOutput;
use custody::repo::prune::PruneReport;

fn forget_and_prune_reclaim(r: &Repo) {
    r.init();
    let a = r.source("a", 12, 1, Some(100));
    let b = r.source("b", 12, 2, Some(100));
    let c = r.source("c", 12, 3, None);
    let (sa, sb, sc) = (r.backup(&a), r.backup(&b), r.backup(&c));
    let before = r.stats();
    // Dry run: says what would go, changes nothing.
    let dry = r
        .run(&[
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--group-by",
            "",
            "--dry-run",
        ])
        .ok()
        .report::<ForgetOutput>();
    assert_eq!(dry.removed, 2, "{dry:?}");
    assert_eq!(r.stats().snapshots, 3);
    // Reasons are reported for what is kept.
    let f: ForgetOutput = r
        .run(&["--json", "forget", "--keep-last", "1", "--group-by", ""])
        .ok()
        .report();
    let kept = &f.groups[0].keep;
    assert_eq!(kept.len(), 1, "{f:?}");
    assert_eq!(kept[0].id.to_hex(), sc);
    assert_eq!(kept[0].reasons[0], "last snapshot");
    let removed: Vec<String> = f.groups[0].remove.iter().map(|e| e.id.to_hex()).collect();
    assert!(removed.contains(&sa) && removed.contains(&sb));
    // Prune with a grace period condemns but deletes nothing yet.
    let p: PruneReport = r.run(&["--json", "prune"]).ok().report();
    assert!(p.mark.mark.is_some(), "{p:?}");
    assert_eq!(p.sweep.packs_deleted, 0);
    // It says when the space comes back: a day (the default grace) from now.
    assert_eq!(p.space.bytes_waiting, p.mark.bytes_condemned, "{p:?}");
    let wait = p.space.first_free.unwrap() - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::hours(23) && wait <= chrono::Duration::hours(24),
        "{p:?}"
    );
    let said = r.run(&["prune", "--dry-run"]).ok().out();
    assert!(
        said.contains("space: 0 B would be freed now")
            && said.contains("condemned, freed by the first prune run after")
            && said.contains("grace period of 1 d"),
        "{said}"
    );
    assert_eq!(r.stats().pack_bytes, before.pack_bytes);
    let chk = r.check();
    assert!(chk.condemned > 0, "{chk:?}");
    assert!(chk.problems.is_empty(), "{chk:?}");
    // A backup now stores the condemned data again instead of relying on it.
    let a2 = r.source("a2", 0, 0, Some(100));
    let v: custody::repo::backup::BackupOutput = r
        .run(&["--json", "backup", a2.to_str().unwrap()])
        .ok()
        .report();
    assert!(v.bytes_added > 3 << 20, "{v:?}");
    // Past the grace period, the sweep deletes; the shared file stays (a2 needs it).
    let p: PruneReport = r
        .run(&["--json", "prune", "--grace", "0s", "--max-unused", "0%"])
        .ok()
        .report();
    assert!(p.sweep.packs_deleted > 0, "{p:?}");
    let after = r.stats();
    assert!(
        after.pack_bytes < before.pack_bytes,
        "{before:?} -> {after:?}"
    );
    let chk = r.check();
    assert_eq!(chk.leftovers.len(), 0, "{chk:?}");
    assert_eq!(chk.condemned, 0, "{chk:?}");
    assert_eq!(chk.marks, 0, "{chk:?}");
    assert_eq!(r.restore_all(), 2);
    // A second prune finds nothing more to do.
    let p = r
        .run(&["--json", "prune", "--grace", "0s", "--max-unused", "0%"])
        .ok()
        .report::<PruneReport>();
    assert!(p.mark.mark.is_none(), "{p:?}");
}

#[test]
fn forget_and_prune_reclaim_space() {
    both(forget_and_prune_reclaim);
}

#[test]
fn forget_refuses_a_policy_that_keeps_nothing() {
    let r = Repo::local();
    r.init();
    let a = r.source("a", 2, 1, None);
    r.backup(&a);
    let e = r.run(&["forget"]).code(EXIT_USAGE);
    assert!(e.stderr.contains("keep policy"), "{}", e.stderr);
    assert_eq!(r.stats().snapshots, 1);
}

fn concurrent(r: &Repo) {
    r.init();
    let dirs: Vec<PathBuf> = (0..4)
        .map(|i| r.source(&format!("host{i}"), 8, 10 + i, Some(7)))
        .collect();
    let run_all = |tag: &str| -> Vec<serde_json::Value> {
        let children: Vec<Child> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                r.spawn(&[
                    "--json",
                    "backup",
                    d.to_str().unwrap(),
                    "--host",
                    &format!("h{i}"),
                    "--tag",
                    tag,
                ])
            })
            .collect();
        children
            .into_iter()
            .map(|c| {
                let o = c.wait_with_output().unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                serde_json::from_slice(&o.stdout).unwrap()
            })
            .collect()
    };
    run_all("one");
    // All four committed; a second round (writers again at once) finds everything stored.
    let second = run_all("two");
    for v in &second {
        assert!(
            v["bytes_added"].as_u64().unwrap() < 64 << 10,
            "no dedup: {v}"
        );
    }
    assert_eq!(r.stats().snapshots, 8);
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(r.restore_all(), 8);
}

#[test]
fn four_concurrent_backups_commit_and_dedup() {
    both(concurrent);
}

fn prune_during_backups(r: &Repo) {
    r.init();
    let base = r.source("base", 10, 1, Some(5));
    r.backup(&base);
    // Backups of changing folders run in a loop while prunes run with a short grace.
    let dirs: Vec<PathBuf> = (0..6)
        .map(|i| r.source(&format!("d{i}"), 6, 40 + i, Some(5)))
        .collect();
    let mut backups = Vec::new();
    let mut prunes = 0;
    let start = Instant::now();
    for d in &dirs {
        let child = r.spawn(&["backup", d.to_str().unwrap()]);
        // Forget older ones and prune while that backup runs.
        r.run(&["forget", "--keep-last", "3", "--group-by", ""])
            .ok();
        let p = r.run(&["prune", "--grace", "1s", "--max-unused", "0%"]);
        assert!(p.code == 0 || p.code == EXIT_CONFLICT, "{}", p.stderr);
        prunes += 1;
        backups.push(child.wait_with_output().unwrap());
        std::thread::sleep(Duration::from_millis(300));
    }
    let committed = backups.iter().filter(|o| o.status.success()).count();
    for o in &backups {
        let code = o.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == EXIT_CONFLICT,
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    eprintln!(
        "{committed} of {} backups committed while prunes ran",
        backups.len()
    );
    assert!(
        committed >= 1,
        "no backup committed in {:?}",
        start.elapsed()
    );
    assert!(prunes >= 6);
    std::thread::sleep(Duration::from_millis(1100));
    r.run(&["prune", "--grace", "1s"]).ok();
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    r.restore_all();
}

#[test]
fn prune_while_backups_run_loses_nothing() {
    both(prune_during_backups);
}

/// A backup deduplicates against data that a prune then condemns and deletes while the
/// backup is stopped (SIGSTOP) past the grace period. Resumed, it must stop without
/// committing (exit 6) or commit a snapshot that restores; either way nothing is lost.
/// A backup paused while the old snapshot is forgotten and what it reused is condemned: with
/// `deleted`, a second prune past the grace period also deletes it (and replaces the index
/// segments); without, only the first prune's mark condemns it, every segment the backup read
/// stays listed, and the backup's check before the commit must see the mark itself (the fast
/// path of docs/FORMAT.md §14b that reads no segment again): it stops with exit 6.
fn paused_backup_meets_prune(r: &Repo, deleted: bool) {
    r.init();
    let old = r.source("old", 6, 1, None);
    r.backup(&old);
    let keep = r.source("keep", 4, 2, None);
    let kept = r.backup(&keep);
    // The backup below reads `a-old` (same bytes as `old`: deduplicated) before the big file.
    let src = r.sb.path("paused");
    for e in std::fs::read_dir(&old).unwrap() {
        let e = e.unwrap();
        write(
            &src.join("a-old").join(e.file_name()),
            &std::fs::read(e.path()).unwrap(),
        );
    }
    write(&src.join("b-big.bin"), &random_bytes(48 << 20, 77));
    let stats0 = r.stats().packs;
    let child = r.spawn(&[
        "--json",
        "backup",
        src.to_str().unwrap(),
        "--workers",
        "1",
        "--uploads",
        "1",
    ]);
    let pid = child.id() as i32;
    // Stop it once it has uploaded a few packs (it is past `a-old` by then).
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.stats().packs < stats0 + 3 {
        assert!(Instant::now() < deadline, "backup made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Meanwhile the old snapshot is forgotten and its data condemned, then deleted.
    let old_id = r.run(&["--json", "snapshots"]).ok().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old_id, kept);
    r.run(&["forget", &old_id]).ok();
    if deleted {
        r.run(&["prune", "--grace", "1s"]).ok();
        std::thread::sleep(Duration::from_millis(1200));
        let p: PruneReport = r.run(&["--json", "prune", "--grace", "1s"]).ok().report();
        assert!(p.sweep.packs_deleted > 0, "{p:?}");
    } else {
        let p: PruneReport = r.run(&["--json", "prune", "--grace", "1h"]).ok().report();
        assert_eq!(p.sweep.packs_deleted, 0, "{p:?}");
    }
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("paused backup ended with {:?}: {stderr}", o.status.code());
    match o.status.code() {
        Some(EXIT_CONFLICT) => assert!(stderr.contains("run the backup again"), "{stderr}"),
        Some(0) if deleted => {}
        c => panic!("backup ended with {c:?}: {stderr}"),
    }
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    r.restore_all();
    // The rerun commits, and a later prune clears what the stopped run left.
    r.backup(&src);
    r.run(&["prune", "--grace", "0s"]).ok();
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(chk.leftovers.len(), 0, "{chk:?}");
    assert_eq!(r.restore_all(), 2);
}

#[test]
fn backup_paused_past_the_grace_period_loses_nothing() {
    both(|r| paused_backup_meets_prune(r, true));
}

#[test]
fn backup_paused_while_its_reused_packs_are_condemned_stops() {
    both(|r| paused_backup_meets_prune(r, false));
}

fn crash_points(r: &Repo) {
    r.init();
    let a = r.source("a", 10, 1, Some(3));
    r.backup(&a);
    let b = r.source("b", 10, 2, Some(3));
    r.backup(&b);
    // Backups killed before and after their index segment: no snapshot, earlier ones intact.
    for (i, point) in ["backup-before-commit", "backup-before-snapshot"]
        .iter()
        .enumerate()
    {
        let c = r.source(&format!("c{i}"), 6, 20 + i as u64, None);
        let run = r.run_fail(point, &["backup", c.to_str().unwrap()]);
        assert!(killed(&run), "{point}: {} {}", run.code, run.stderr);
        assert_eq!(r.stats().snapshots, 2, "{point}");
        let chk = r.check();
        assert!(chk.problems.is_empty(), "{point}: {chk:?}");
        r.restore_all();
    }
    assert!(!r.check().leftovers.is_empty());
    // The reruns complete.
    for i in 0..2 {
        r.backup(&r.sb.path(&format!("c{i}")));
    }
    r.run(&["forget", "--keep-last", "3", "--group-by", ""])
        .ok();
    // Prune killed at each step, then rerun: nothing lost, and the last run finishes the job.
    for point in [
        "prune-after-repack",
        "prune-before-mark",
        "prune-sweep-before-delete",
        "prune-sweep-after-packs",
    ] {
        let run = r.run_fail(point, &["prune", "--grace", "0s", "--max-unused", "0%"]);
        assert!(killed(&run), "{point}: {} {}", run.code, run.stderr);
        let chk = r.check();
        assert!(chk.problems.is_empty(), "{point}: {chk:?}");
        assert_eq!(r.restore_all(), 3, "{point}");
        // The killed run left its lock: another prune is refused until it goes stale...
        let busy = r.run(&["prune"]).code(EXIT_CONFLICT);
        assert!(
            busy.stderr.contains("holds the repository lock"),
            "{}",
            busy.stderr
        );
        // ...so the test removes it, as an operator would after checking the run is dead.
        r.remove_locks();
    }
    r.run(&["prune", "--grace", "0s", "--max-unused", "0%"])
        .ok();
    r.run(&["prune", "--grace", "0s", "--max-unused", "0%"])
        .ok();
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(chk.leftovers.len(), 0, "{chk:?}");
    assert_eq!(chk.condemned, 0, "{chk:?}");
    assert_eq!(r.restore_all(), 3);
}

#[test]
fn sigkill_during_backup_and_prune_loses_nothing() {
    both(crash_points);
}

fn two_prunes_at_once(r: &Repo) {
    r.init();
    for i in 0..4 {
        let d = r.source(&format!("s{i}"), 8, 60 + i, Some(11));
        r.backup(&d);
    }
    r.run(&["forget", "--keep-last", "2", "--group-by", ""])
        .ok();
    let a = r.spawn(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    let b = r.spawn(&["prune", "--grace", "0s", "--max-unused", "0%"]);
    let codes: Vec<i32> = [a, b]
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            let code = o.status.code().unwrap_or(-1);
            assert!(
                code == 0 || code == EXIT_CONFLICT,
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
            code
        })
        .collect();
    assert!(codes.contains(&0), "{codes:?}");
    eprintln!("two prunes at once ended with {codes:?}");
    let chk = r.check();
    assert!(chk.problems.is_empty(), "{chk:?}");
    assert_eq!(r.restore_all(), 2);
}

#[test]
fn two_prunes_at_once_exclude_each_other_or_are_harmless() {
    both(two_prunes_at_once);
}

/// Opens the repository through the library with the keyring in `keyring` (an attacker's
/// view: a writer keyring holds what a compromised backup host holds).
fn open_with(
    r: &Repo,
    keyring: &std::path::Path,
) -> (tokio::runtime::Runtime, custody::repo::Repository) {
    use custody::keyservice::{self, KeyServiceOptions};
    use custody::repo::Repository;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let st = custody::store::open(
        r.sb.repo().to_str().unwrap(),
        &Default::default(),
        rt.handle(),
    )
    .unwrap();
    let config = Repository::read_config(rt.handle(), &st).unwrap();
    let keys = keyservice::open(
        &format!("local:{}", keyring.display()),
        &KeyServiceOptions::default(),
        rt.handle(),
    )
    .unwrap();
    let identity = custody::identity::WriterIdentity::path_in(keyring);
    let identity = identity
        .exists()
        .then(|| custody::identity::WriterIdentity::open(&identity, None).unwrap());
    let repo = Repository::open(rt.handle().clone(), st, keys, config, identity).unwrap();
    (rt, repo)
}

/// Two snapshots on the local store, and the repository opened through the library as a
/// writer (its keyring exported by the owner): the attacker of the forged-object tests.
fn two_snapshots_seen_by_a_writer() -> (
    Repo,
    usize,
    tokio::runtime::Runtime,
    custody::repo::Repository,
) {
    let r = Repo::local();
    r.init();
    let a = r.source("a", 10, 1, Some(5));
    r.backup(&a);
    let b = r.source("b", 10, 2, Some(5));
    r.backup(&b);
    let packs_before = r.stats().packs;
    let writer = r.sb.export_writer("writer-keyring", &[]);
    let (rt, repo) = open_with(&r, &writer);
    (r, packs_before, rt, repo)
}

/// A writer holds the index key, so it can seal a garbage mark. One that condemns every
/// pack, segment and session key, dated two days back, must not make prune delete anything:
/// only the owner signs marks (docs/FORMAT.md §17.4), so prune ignores it and `check` names it.
#[test]
fn a_forged_garbage_mark_cannot_get_needed_data_deleted() {
    use custody::format::garbage::GarbageMark;
    use custody::store::FileKind;

    let (r, packs_before, _rt, repo) = two_snapshots_seen_by_a_writer();
    let ids = |k| -> Vec<custody::Id> {
        repo.store()
            .list(k)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    let forged = GarbageMark {
        format: 1,
        time: chrono::Utc::now() - chrono::Duration::days(2),
        packs: ids(FileKind::Pack).into_iter().map(Into::into).collect(),
        segments: ids(FileKind::Index).into_iter().map(Into::into).collect(),
        sessions: ids(FileKind::Key).into_iter().map(Into::into).collect(),
        unindexed: vec![],
    };
    repo.save_mark(&forged).unwrap();
    drop(repo);

    let p: PruneReport = r.run(&["--json", "prune"]).ok().report();
    assert_eq!(
        p.sweep.marks_due, 0,
        "the writer's mark is not the owner's: {p:?}"
    );
    assert_eq!(p.sweep.packs_deleted, 0, "{p:?}");
    assert_eq!(p.sweep.keys_deleted, 0, "{p:?}");
    assert_eq!(r.stats().packs, packs_before);
    let chk: custody::repo::check::CheckReport = r
        .run(&["--json", "check", "--read-data"])
        .code(EXIT_INTEGRITY)
        .report();
    assert!(
        chk.problems.iter().all(|p| p.object.starts_with("garbage/")
            && p.message.contains("only the owner writes a garbage mark")),
        "{chk:?}"
    );
    assert_eq!(chk.problems.len(), 1, "{chk:?}");
    assert_eq!(r.restore_all(), 2);
}

/// A writer can also forge an index segment: here one that lists every pack again with no
/// blobs, beside a mark that condemns every pack. Two listings of one pack that disagree are
/// an integrity failure: check names both segments, prune refuses (exit 3) and deletes
/// nothing, and every snapshot still restores.
#[test]
fn a_forged_segment_disagreeing_with_the_index_stops_prune() {
    use custody::format::garbage::GarbageMark;
    use custody::format::index::{IndexSegment, PackEntries};
    use custody::store::FileKind;

    let (r, packs_before, _rt, repo) = two_snapshots_seen_by_a_writer();
    let genuine = repo.load_segments().unwrap();
    let emptied = IndexSegment {
        packs: genuine
            .iter()
            .flat_map(|(_, seg)| seg.packs.iter())
            .map(|p| PackEntries {
                pack: p.pack,
                session: p.session,
                blobs: vec![],
            })
            .collect(),
        provisional: false,
    };
    let forged = repo.save_index_segment(&emptied).unwrap();
    let all = |k| -> Vec<custody::id::PackId> {
        repo.store()
            .list(k)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id.into())
            .collect()
    };
    repo.save_mark(&GarbageMark {
        format: 1,
        time: chrono::Utc::now() - chrono::Duration::days(2),
        packs: all(FileKind::Pack),
        segments: genuine.iter().map(|(id, _)| *id).collect(),
        sessions: vec![],
        unindexed: vec![],
    })
    .unwrap();
    drop(repo);

    let chk: custody::repo::check::CheckReport =
        r.run(&["--json", "check"]).code(EXIT_INTEGRITY).report();
    let named = chk
        .problems
        .iter()
        .any(|p| p.integrity && p.object.contains(&forged.to_hex()));
    assert!(named, "check must name the forged segment: {chk:?}");
    for _ in 0..2 {
        let p = r.run(&["prune"]).code(EXIT_INTEGRITY);
        assert!(p.stderr.contains("differently"), "{}", p.stderr);
    }
    assert_eq!(r.stats().packs, packs_before);
    assert_eq!(r.restore_all(), 2);
}

/// Partial files that interrupted writes leave in a local repository (`.tmp-*` beside the
/// packs): `check` reports them, `prune` removes those unchanged for the grace period (and at
/// least 15 minutes, so a write in progress is never touched), a dry run only counts them,
/// and nothing else in the folder is touched.
#[test]
fn partial_files_of_interrupted_writes_are_reported_and_pruned() {
    let sb = Sandbox::new();
    sb.init();
    write(&sb.path("src/a"), &random_bytes(100_000, 1));
    sb.run(&["backup", sb.path("src").to_str().unwrap()]).ok();
    let fan = sb.repo().join("data/ab");
    let old = fan.join(format!(".tmp-{}-0123456789abcdef", "ab".repeat(32)));
    let fresh = fan.join(format!(".tmp-{}-fedcba9876543210", "ab".repeat(32)));
    let other = fan.join("notes.txt");
    for p in [&old, &fresh, &other] {
        write(p, &[7u8; 4096]);
    }
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let chk = sb.run(&["--json", "check"]).ok().json();
    assert_eq!(
        chk["temporaries"].as_array().map(Vec::len),
        Some(2),
        "{chk}"
    );
    let text = sb.run(&["check"]).ok().out();
    assert!(
        text.contains("2 partial file(s) of interrupted writes"),
        "{text}"
    );
    // The default grace (24 h) keeps even the hour-old one.
    sb.run(&["prune"]).ok();
    assert!(old.exists());
    let dry: PruneReport = sb
        .run(&["--json", "prune", "--grace", "0s", "--dry-run"])
        .ok()
        .report();
    assert_eq!(dry.sweep.temporaries_removed, 1);
    assert!(old.exists());
    let done: PruneReport = sb.run(&["--json", "prune", "--grace", "0s"]).ok().report();
    assert_eq!(
        (
            done.sweep.temporaries_removed,
            done.sweep.temporary_bytes_removed
        ),
        (1, 4096)
    );
    assert!(!old.exists() && fresh.exists() && other.exists());
    sb.run(&["check", "--read-data"]).ok();
}
