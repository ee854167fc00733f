//! A three-node Garage cluster (replication factor 3) on loopback: the store conformance
//! suite, and a backup during which one node is killed. The backup commits, everything
//! restores and checks with the node still down, prune works on the degraded cluster, and the
//! node rejoins. Garage ignores `If-None-Match` and can list just-deleted objects for a while;
//! custody relies on neither (docs/FORMAT.md §1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::conformance::conformance;
use crate::common::services::{available, sdk_config, Garage};
use crate::common::*;
use custody::store::{S3Store, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_conformance() {
    if !available("garage") {
        return;
    }
    let g = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let conf = sdk_config(&g.endpoint, &g.key_id, &g.secret);
    let store = S3Store::with_config(
        &format!("s3://{}/conformance", g.bucket),
        &conf,
        &Default::default(),
    )
    .unwrap();
    conformance(Arc::new(store) as Arc<dyn Store>).await;
    tokio::task::spawn_blocking(move || drop(g)).await.unwrap();
}

#[test]
fn garage_node_killed_during_backup() {
    if !available("garage") {
        return;
    }
    let mut g = Garage::start();
    let sb = Sandbox::new();
    let mut env = g.env();
    env.push(("CUSTODY_REPOSITORY", format!("s3://{}/repo", g.bucket)));
    let run = |args: &[&str]| sb.run_env(&env, args);
    let init = run(&["init", "--pack-size-mib", "1"]).ok().out();
    // What init found, printed for the record (docs/FORMAT.md §21 lists each server's answer).
    let said = init
        .lines()
        .find(|l| l.starts_with("conditional writes"))
        .unwrap_or_else(|| panic!("init says nothing of conditional writes: {init}"));
    eprintln!("garage: {said}");
    write(&sb.path("first/a.bin"), &random_bytes(3 << 20, 1));
    run(&["backup", sb.path("first").to_str().unwrap()]).ok();

    write(&sb.path("second/big.bin"), &random_bytes(48 << 20, 2));
    write(&sb.path("second/a.bin"), &random_bytes(3 << 20, 1));
    let mut cmd = sb.cmd(&[
        "--json",
        "backup",
        sb.path("second").to_str().unwrap(),
        "--workers",
        "1",
        "--uploads",
        "1",
    ]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the third node once the backup is under way.
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    g.stop(2);
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "backup with a node down: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "backup finished {:?} after start, node killed at 0.7 s",
        start.elapsed()
    );
    // Everything reads back with the node still down.
    run(&["check", "--read-data"]).ok();
    for (dir, spec) in [("first", "0"), ("second", "latest")] {
        let spec = if spec == "0" {
            run(&["--json", "snapshots"]).ok().json()[0]["id"]
                .as_str()
                .unwrap()
                .to_string()
        } else {
            spec.to_string()
        };
        let out = sb.path(&format!("out-{dir}"));
        run(&["restore", &spec, "--target", out.to_str().unwrap()]).ok();
        assert_same_tree(&sb.path(dir), &restored(&out, &sb.path(dir)));
    }
    // Retention and garbage collection on the degraded cluster.
    run(&["forget", "--keep-last", "1", "--group-by", ""]).ok();
    run(&["prune", "--grace", "0s", "--max-unused", "0%"]).ok();
    run(&["check", "--read-data"]).ok();
    // The node comes back; the cluster and the repository are whole.
    g.restart(2);
    std::thread::sleep(Duration::from_secs(2));
    run(&["check", "--read-data"]).ok();
    let out = sb.path("out-final");
    run(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_same_tree(&sb.path("second"), &restored(&out, &sb.path("second")));
}
