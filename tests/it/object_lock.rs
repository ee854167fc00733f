//! Immutable backups (issue #16, docs/FORMAT.md §21) on moto's S3 server, which enforces
//! Object Lock on versioned buckets. The attacker holds the backup job's bucket credentials:
//! it deletes and overwrites every object it can, and cannot delete a locked version; the
//! key holder brings the repository back with `repair undelete`. Maintenance on locked
//! objects defers, retention is extended, governance and compliance differ, and a server
//! without Object Lock is refused.

use aws_sdk_s3::Client;

use crate::common::services::{
    available, s3_env, sdk_config, Moto, S3sFs, S3_ACCESS_KEY, S3_SECRET_KEY,
};
use crate::common::*;
use custody::repo::snapshots::SnapshotTable;

const BUCKET: &str = "locked-backups";

fn client(m: &Moto) -> (tokio::runtime::Runtime, Client) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conf = sdk_config(&m.endpoint, "testing", "testing");
    let c = Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    );
    (rt, c)
}

struct Lab {
    moto: Moto,
    sb: Sandbox,
    repo: String,
}

impl Lab {
    fn new(bucket: &str) -> Lab {
        Lab {
            moto: Moto::start(false),
            sb: Sandbox::new(),
            repo: format!("s3://{bucket}/repo"),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut a = vec!["--repo", self.repo.as_str()];
        a.extend_from_slice(args);
        self.sb.run_env(&self.moto.env(), &a)
    }

    fn snapshots(&self) -> Vec<String> {
        let t: SnapshotTable = self.run(&["--json", "snapshots"]).ok().report();
        t.0.iter().map(|s| s.id.to_hex()).collect()
    }
}

/// Every current key under the repository's prefix.
fn keys(rt: &tokio::runtime::Runtime, c: &Client, bucket: &str) -> Vec<String> {
    let out = rt
        .block_on(c.list_objects_v2().bucket(bucket).prefix("repo/").send())
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

fn retain_until(rt: &tokio::runtime::Runtime, c: &Client, bucket: &str, key: &str) -> i64 {
    let h = rt
        .block_on(c.head_object().bucket(bucket).key(key).send())
        .unwrap();
    h.object_lock_retain_until_date()
        .unwrap_or_else(|| panic!("{key} is not locked"))
        .secs()
}

#[test]
fn attacker_deletes_and_overwrites_then_undelete_restores_every_snapshot() {
    if !available("moto_server") {
        return;
    }
    let lab = Lab::new(BUCKET);
    let init = lab
        .run(&[
            "--json",
            "init",
            "--pack-size-mib",
            "1",
            "--object-lock-days",
            "30",
        ])
        .ok()
        .json();
    assert_eq!(init["object_lock"]["days"], 30, "{init}");
    assert_eq!(init["object_lock"]["mode"], "governance", "{init}");
    let src = lab.sb.path("src");
    write(&src.join("a.bin"), &random_bytes(2 << 20, 1));
    write(&src.join("b.txt"), b"first\n");
    lab.run(&["backup", src.to_str().unwrap()]).ok();
    write(&src.join("b.txt"), b"second\n");
    write(&src.join("c.bin"), &random_bytes(1 << 20, 2));
    lab.run(&["backup", src.to_str().unwrap()]).ok();
    let before_attack = lab.snapshots();
    assert_eq!(before_attack.len(), 2);

    // Every object custody wrote is locked for at least 30 days.
    let (rt, c) = client(&lab.moto);
    let all = keys(&rt, &c, BUCKET);
    let soon = chrono::Utc::now().timestamp() + 29 * 86400;
    for k in &all {
        assert!(retain_until(&rt, &c, BUCKET, k) > soon, "{k}");
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = chrono::Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // The attacker: delete markers on everything, junk over the manifests, and attempts to
    // delete the locked versions themselves, which the server refuses.
    let versions = rt
        .block_on(
            c.list_object_versions()
                .bucket(BUCKET)
                .prefix("repo/")
                .send(),
        )
        .unwrap();
    for v in versions.versions() {
        let r = rt.block_on(
            c.delete_object()
                .bucket(BUCKET)
                .key(v.key().unwrap())
                .version_id(v.version_id().unwrap())
                .send(),
        );
        assert!(r.is_err(), "a locked version of {:?} was deleted", v.key());
    }
    for k in &all {
        if k.contains("/snapshots/") {
            rt.block_on(
                c.put_object()
                    .bucket(BUCKET)
                    .key(k)
                    .body(b"ransom note".to_vec().into())
                    .send(),
            )
            .unwrap();
        } else {
            rt.block_on(c.delete_object().bucket(BUCKET).key(k).send())
                .unwrap();
        }
    }
    let gone = lab.run(&["snapshots"]);
    assert_ne!(gone.code, EXIT_OK, "the repository still opened");

    let time = t.to_rfc3339();
    let dry = lab
        .run(&[
            "--json",
            "repair",
            "undelete",
            "--before",
            &time,
            "--dry-run",
        ])
        .ok()
        .json();
    let n = dry["restored"].as_array().unwrap().len();
    assert_eq!(n, all.len(), "every object comes back: {dry}");
    let deleted_only = lab
        .run(&[
            "--json",
            "repair",
            "undelete",
            "--before",
            &time,
            "--dry-run",
            "--deleted-only",
        ])
        .ok()
        .json();
    let manifests = all.iter().filter(|k| k.contains("/snapshots/")).count();
    assert_eq!(
        deleted_only["left_overwritten"], manifests,
        "{deleted_only}"
    );
    assert_eq!(
        deleted_only["restored"].as_array().unwrap().len(),
        n - manifests,
        "{deleted_only}"
    );
    assert!(
        lab.run(&["snapshots"]).code != EXIT_OK,
        "a dry run changed something"
    );
    let done = lab
        .run(&["--json", "repair", "undelete", "--before", &time])
        .ok()
        .json();
    assert_eq!(done["restored"].as_array().unwrap().len(), n);
    assert_eq!(lab.snapshots(), before_attack);
    lab.run(&["check", "--read-data"]).ok();
    let out = lab.sb.path("restored");
    lab.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out, &src));
    // Run again: nothing left to do.
    let again = lab
        .run(&["--json", "repair", "undelete", "--before", &time])
        .ok()
        .json();
    assert_eq!(again["restored"].as_array().unwrap().len(), 0, "{again}");

    // forget + prune: the locked packs are condemned and kept until their date, reported,
    // and the run succeeds; the next run still finds them waiting.
    let first = &before_attack[0];
    lab.run(&["forget", first]).ok();
    let prune = lab.run(&["--json", "prune", "--grace", "0s"]).ok().json();
    let deferred = prune["sweep"]["deferred"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!deferred.is_empty(), "nothing deferred: {prune}");
    let text = lab.run(&["prune", "--grace", "0s"]).ok().out();
    assert!(text.contains("Object Lock retention until"), "{text}");
    lab.run(&["check", "--read-data"]).ok();
    assert_eq!(lab.snapshots(), vec![before_attack[1].clone()]);

    // Packs whose date has passed while an index segment listing them is still locked (a
    // segment is often younger than its packs) stay as long as that segment: otherwise a
    // backup would find a deleted pack in the index and not upload its chunks again.
    let shorten = |key: &str, secs: i64| {
        let until = chrono::Utc::now() + chrono::Duration::seconds(secs);
        rt.block_on(
            c.put_object_retention()
                .bucket(BUCKET)
                .key(key)
                .bypass_governance_retention(true)
                .retention(
                    aws_sdk_s3::types::ObjectLockRetention::builder()
                        .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Governance)
                        .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                            until.timestamp(),
                        ))
                        .build(),
                )
                .send(),
        )
        .unwrap();
    };
    for d in &deferred {
        let key = format!("repo/{}", d["object"].as_str().unwrap());
        if key.contains("/data/") {
            shorten(&key, 2);
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    lab.run(&["prune", "--grace", "0s"]).ok();
    write(&src.join("b.txt"), b"first\n");
    std::fs::remove_file(src.join("c.bin")).unwrap();
    lab.run(&["backup", src.to_str().unwrap()]).ok();
    lab.run(&["check", "--read-data"]).ok();
    let out3 = lab.sb.path("restored-3");
    lab.run(&["restore", "latest", "--target", out3.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out3, &src));

    // Once their date has passed (here: shortened by a break-glass role), a later prune
    // deletes what it deferred (objects it writes meanwhile are locked anew, and wait too).
    let mut waiting = deferred.clone();
    for _ in 0..4 {
        for d in &waiting {
            shorten(&format!("repo/{}", d["object"].as_str().unwrap()), 2);
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
        let r = lab.run(&["--json", "prune", "--grace", "0s"]).ok().json();
        waiting = r["sweep"]["deferred"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if waiting.is_empty() {
            break;
        }
    }
    assert!(waiting.is_empty(), "still deferred: {waiting:?}");
    let now = keys(&rt, &c, BUCKET);
    for d in &deferred {
        let key = format!("repo/{}", d["object"].as_str().unwrap());
        assert!(!now.contains(&key), "{key} still current after its date");
    }
    lab.run(&["check", "--read-data"]).ok();
    let out2 = lab.sb.path("restored-2");
    lab.run(&["restore", "latest", "--target", out2.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out2, &src));
}

#[test]
fn retention_extend_keeps_reused_data_locked() {
    if !available("moto_server") {
        return;
    }
    let lab = Lab::new("extend-bucket");
    lab.run(&["init", "--pack-size-mib", "1", "--object-lock-days", "1"])
        .ok();
    let src = lab.sb.path("src");
    write(&src.join("a.bin"), &random_bytes(1 << 20, 3));
    lab.run(&["backup", src.to_str().unwrap()]).ok();
    let (rt, c) = client(&lab.moto);
    let packs: Vec<String> = keys(&rt, &c, "extend-bucket")
        .into_iter()
        .filter(|k| k.contains("/data/"))
        .collect();
    let day = chrono::Utc::now().timestamp() + 2 * 86400;
    assert!(packs
        .iter()
        .all(|k| retain_until(&rt, &c, "extend-bucket", k) < day));

    lab.run(&["retention", "set", "--days", "40"]).ok();
    // A new snapshot that reuses all of the old objects' data: it writes no new pack, so
    // only an extension keeps its data locked for the new period.
    lab.run(&["backup", src.to_str().unwrap(), "--force"]).ok();
    let after: Vec<String> = keys(&rt, &c, "extend-bucket")
        .into_iter()
        .filter(|k| k.contains("/data/"))
        .collect();
    assert_eq!(
        after.len(),
        packs.len(),
        "the second backup reused every pack"
    );
    let shown = lab.run(&["retention", "show"]).ok().out();
    assert!(shown.contains("governance for 40 day(s)"), "{shown}");
    // Junk planted among the manifests (anyone with the job's credentials can) is named, and
    // stops nothing: everything else is still extended.
    let junk = format!("repo/snapshots/{}", "ab".repeat(32));
    rt.block_on(
        c.put_object()
            .bucket("extend-bucket")
            .key(&junk)
            .body(b"junk".to_vec().into())
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
            .send(),
    )
    .unwrap();
    let dry = lab
        .run(&["--json", "retention", "extend", "--dry-run"])
        .code(EXIT_INTEGRITY)
        .json();
    assert!(dry["objects_extended"].as_u64().unwrap() > 0, "{dry}");
    assert!(
        dry["problems"].to_string().contains(&"ab".repeat(32)),
        "{dry}"
    );
    assert!(packs
        .iter()
        .all(|k| retain_until(&rt, &c, "extend-bucket", k) < day));
    let r = lab
        .run(&["--json", "retention", "extend"])
        .code(EXIT_INTEGRITY)
        .json();
    assert_eq!(r["objects_extended"], dry["objects_extended"], "{r}");
    let month = chrono::Utc::now().timestamp() + 39 * 86400;
    for k in &packs {
        assert!(retain_until(&rt, &c, "extend-bucket", k) > month, "{k}");
    }
    // Everything is as locked as it needs to be: nothing more to extend.
    let again = lab
        .run(&["--json", "retention", "extend"])
        .code(EXIT_INTEGRITY)
        .json();
    assert_eq!(again["objects_extended"], 0, "{again}");
}

#[test]
fn governance_can_be_bypassed_and_compliance_cannot() {
    if !available("moto_server") {
        return;
    }
    for (mode, bucket) in [("governance", "gov-bucket"), ("compliance", "comp-bucket")] {
        let lab = Lab::new(bucket);
        lab.run(&[
            "init",
            "--object-lock-days",
            "5",
            "--object-lock-mode",
            mode,
        ])
        .ok();
        let (rt, c) = client(&lab.moto);
        let out = rt
            .block_on(
                c.list_object_versions()
                    .bucket(bucket)
                    .prefix("repo/config")
                    .send(),
            )
            .unwrap();
        let v = out.versions()[0].version_id().unwrap().to_string();
        let r = rt.block_on(
            c.delete_object()
                .bucket(bucket)
                .key("repo/config")
                .version_id(&v)
                .bypass_governance_retention(true)
                .send(),
        );
        assert_eq!(r.is_ok(), mode == "governance", "{mode}: {r:?}");
    }
}

#[test]
fn fail_object_lock_without_a_locking_server() {
    let sb = Sandbox::new();
    // A folder has no Object Lock.
    let r = sb
        .run(&["init", "--object-lock-days", "7"])
        .code(EXIT_USAGE);
    assert!(r.stderr.contains("needs an S3 bucket"), "{}", r.stderr);
    if !available("s3s-fs") {
        return;
    }
    let s = S3sFs::start();
    let env = s3_env(&s.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY);
    let r = sb
        .run_env(
            &env,
            &[
                "--repo",
                "s3://plain/repo",
                "init",
                "--object-lock-days",
                "7",
            ],
        )
        .code(EXIT_USAGE);
    assert!(
        r.stderr.contains("Object Lock") && !sb.path("plain").exists(),
        "{}",
        r.stderr
    );
}
