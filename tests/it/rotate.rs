//! Rotation by rewrap: across backends, idempotent, resumable, and the old KEK can go.

use crate::common::services::{available, Moto, SoftHsm};
use crate::common::*;
use custody::repo::rewrap::RewrapReport;

fn three_snapshots(sb: &Sandbox, ks: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..3 {
        write(
            &sb.path(&format!("src/f{i}")),
            &random_bytes(100_000 + i, i as u64),
        );
        let mut a: Vec<&str> = ks.to_vec();
        a.extend(["--json", "backup"]);
        let p = sb.path("src");
        a.push(p.to_str().unwrap());
        ids.push(
            sb.run(&a).ok().json()["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ids
}

/// `rotate rewrap ARGS` with `--json`, read as its report.
fn rewrap(sb: &Sandbox, args: &[&str]) -> RewrapReport {
    let mut a = vec!["--json", "rotate", "rewrap"];
    a.extend_from_slice(args);
    sb.run(&a).ok().report()
}

fn restores_all(sb: &Sandbox, ks: &str, ids: &[String]) {
    for id in ids {
        let out = sb.path(&format!("out-{}", &id[..8]));
        let _ = std::fs::remove_dir_all(&out);
        sb.run(&[
            "--key-service",
            ks,
            "restore",
            id,
            "--target",
            out.to_str().unwrap(),
        ])
        .ok();
    }
    sb.run(&["--key-service", ks, "check", "--read-data"]).ok();
}

#[test]
fn local_rewrap_is_idempotent_resumable_and_retires_the_old_keyring() {
    let sb = Sandbox::new();
    sb.init();
    let ids = three_snapshots(&sb, &[]);
    let new = format!("local:{}", sb.path("new-ring").display());
    sb.run(&["--key-service", &new, "key", "create"]).ok();

    // Dry run and --older-than change nothing.
    let before = std::fs::read(sb.repo().join("config")).unwrap();
    let v = rewrap(&sb, &["--to", &new, "--dry-run"]);
    assert_eq!(v.rewrapped, 4, "{v:?}");
    let v = rewrap(&sb, &["--to", &new, "--older-than", "1d"]);
    assert_eq!((v.rewrapped, v.too_new), (0, 4), "{v:?}");
    assert_eq!(std::fs::read(sb.repo().join("config")).unwrap(), before);

    // Keep the pre-rotation records: putting two back later is exactly what a kill -9 midway
    // leaves (each record is replaced atomically).
    let old_keys: Vec<(String, Vec<u8>)> = list_ids(&sb.repo().join("keys"))
        .into_iter()
        .map(|id| {
            let b = std::fs::read(sb.repo().join("keys").join(&id)).unwrap();
            (id, b)
        })
        .collect();
    let v = rewrap(&sb, &["--to", &new]);
    assert_eq!((v.rewrapped, v.verified), (4, 4), "{v:?}");
    let v = rewrap(&sb, &["--to", &new]);
    assert_eq!((v.rewrapped, v.already_done), (0, 4), "{v:?}");

    for (id, b) in &old_keys[..2] {
        std::fs::write(sb.repo().join("keys").join(id), b).unwrap();
    }
    let v = rewrap(&sb, &["--to", &new]);
    assert_eq!((v.rewrapped, v.already_done), (2, 2), "{v:?}");

    // The old keyring can go: everything restores with the new one alone.
    std::fs::remove_dir_all(sb.path("config")).unwrap();
    sb.run(&["snapshots"]).code(EXIT_KEY_SERVICE);
    restores_all(&sb, &new, &ids);
    // And new backups under the new keyring mix with the rotated ones.
    sb.run(&[
        "--key-service",
        &new,
        "backup",
        sb.path("src").to_str().unwrap(),
        "--force",
    ])
    .ok();
}

#[test]
fn rewrap_killed_at_each_step_then_rerun_finishes() {
    let sb = Sandbox::new();
    sb.init();
    let ids = three_snapshots(&sb, &[]);
    let new = format!("local:{}", sb.path("new-ring").display());
    sb.run(&["--key-service", &new, "key", "create"]).ok();
    for point in ["rewrap-after-config", "rewrap-after-record"] {
        let run = sb.run_env(
            &[("CUSTODY_FAILPOINT", point)],
            &["rotate", "rewrap", "--to", &new],
        );
        assert!(killed(&run), "{point}: {} {}", run.code, run.stderr);
    }
    // Half rotated (config and one session key under the new keyring): the rerun, which
    // still has the old keyring, finishes the rest.
    let v = rewrap(&sb, &["--to", &new]);
    assert_eq!((v.rewrapped, v.already_done), (2, 2), "{v:?}");
    std::fs::remove_dir_all(sb.path("config")).unwrap();
    restores_all(&sb, &new, &ids);
}

#[test]
fn rewrap_across_backends_local_pkcs11_kms() {
    if !available("moto_server") || !available("softhsm2-util") {
        return;
    }
    let sb = Sandbox::new();
    let hsm = SoftHsm::new();
    let moto = Moto::start(false);
    let run = |args: &[&str]| {
        let mut c = sb.cmd(args);
        c.env("SOFTHSM2_CONF", &hsm.conf);
        for (k, v) in moto.env() {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    run(&["init"]).ok();
    let ids = three_snapshots(&sb, &[]);

    // local -> pkcs11
    let p11 = hsm.reader_url();
    run(&["--key-service", &p11, "key", "create"]).ok();
    let v = run(&["--json", "rotate", "rewrap", "--to", &p11])
        .ok()
        .report::<RewrapReport>();
    assert_eq!(v.rewrapped, 4, "{v:?}");
    std::fs::remove_dir_all(sb.path("config")).unwrap();

    // pkcs11 -> awskms
    let kms1 = run(&["--json", "key", "create", "--key-service", "awskms:new"])
        .ok()
        .json()["key_service"]
        .as_str()
        .unwrap()
        .to_string();
    let v = run(&[
        "--key-service",
        &p11,
        "--json",
        "rotate",
        "rewrap",
        "--to",
        &kms1,
    ])
    .ok()
    .report::<RewrapReport>();
    assert_eq!(v.rewrapped, 4, "{v:?}");

    // awskms -> awskms: ReEncrypt inside KMS, no plaintext key in this process.
    let kms2 = run(&["--json", "key", "create", "--key-service", "awskms:new"])
        .ok()
        .json()["key_service"]
        .as_str()
        .unwrap()
        .to_string();
    let r = run(&[
        "-v",
        "--key-service",
        &kms1,
        "--json",
        "rotate",
        "rewrap",
        "--to",
        &kms2,
    ])
    .ok();
    assert_eq!(r.report::<RewrapReport>().rewrapped, 4);
    assert!(r.stderr.contains("operation=\"ReEncrypt\""), "{}", r.stderr);
    assert!(
        !r.stderr.contains("operation=\"Decrypt\" kek=\"awskms:") || r.stderr.contains("ReEncrypt")
    );
    let kek1 = kms1
        .trim_start_matches("awskms:")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    for id in list_ids(&sb.repo().join("keys")) {
        let rec = std::fs::read_to_string(sb.repo().join("keys").join(id)).unwrap();
        assert!(!rec.contains(&kek1), "a record still names the old KEK");
    }

    // Every snapshot restores through the final key service.
    for id in &ids {
        let out = sb.path(&format!("out-{}", &id[..8]));
        run(&[
            "--key-service",
            &kms2,
            "restore",
            id,
            "--target",
            out.to_str().unwrap(),
        ])
        .ok();
    }
    run(&["--key-service", &kms2, "check", "--read-data"]).ok();
}

#[test]
fn rotate_keys_job_script() {
    let sb = Sandbox::new();
    sb.init();
    let ids = three_snapshots(&sb, &[]);
    let new = format!("local:{}", sb.path("new-ring").display());
    sb.run(&["--key-service", &new, "key", "create"]).ok();
    let old = format!(
        "local:{}",
        sb.path("config/keyrings")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rotate-keys.sh");
    let o = std::process::Command::new("bash")
        .arg(&script)
        .env("CUSTODY", env!("CARGO_BIN_EXE_custody"))
        .env("CUSTODY_REPOSITORY", sb.repo())
        .env("CUSTODY_KEY_SERVICE", &old)
        .env("ROTATE_TO", &new)
        .env("VERIFY_SUBSET", "1/1")
        .env("ROTATE_REPORT_DIR", sb.path("reports"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let report = std::fs::read_dir(sb.path("reports"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let v: RewrapReport = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(v.rewrapped, 4);
    std::fs::remove_dir_all(sb.path("config")).unwrap();
    restores_all(&sb, &new, &ids);
}

#[test]
fn rewrap_to_a_destination_that_cannot_unwrap_changes_nothing() {
    let sb = Sandbox::new();
    sb.init();
    three_snapshots(&sb, &[]);
    // A new keyring's writer half: it can wrap, never unwrap.
    let fresh = format!("local:{}", sb.path("fresh").display());
    sb.run(&["--key-service", &fresh, "key", "create"]).ok();
    let writer = sb.export_writer("writer", &["--key-service", &fresh]);
    let before: Vec<Vec<u8>> = list_ids(&sb.repo().join("keys"))
        .iter()
        .map(|id| std::fs::read(sb.repo().join("keys").join(id)).unwrap())
        .collect();
    let to = format!("local:{}", writer.display());
    let r = sb
        .run(&["rotate", "rewrap", "--to", &to])
        .code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("cannot unwrap what it wrapped"),
        "{}",
        r.stderr
    );
    let after: Vec<Vec<u8>> = list_ids(&sb.repo().join("keys"))
        .iter()
        .map(|id| std::fs::read(sb.repo().join("keys").join(id)).unwrap())
        .collect();
    assert_eq!(
        before, after,
        "a session key was replaced by one nobody can read"
    );
    sb.run(&["check", "--read-data"]).ok();
}
