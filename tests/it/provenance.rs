//! Writer provenance through the command line (docs/FORMAT.md §17): enrolled writers in
//! `key list` and `key writers`, an identity sealed with the writer's own passphrase, and a
//! rotation that carries the owner key to the new key service.

use crate::common::*;

fn backup(sb: &Sandbox, ks: &str, extra: &[&str], dir: &std::path::Path) -> Run {
    let mut a = vec!["--key-service", ks];
    a.extend_from_slice(extra);
    a.extend(["backup", dir.to_str().unwrap()]);
    sb.run(&a)
}

#[test]
fn writers_are_listed_and_a_sealed_identity_needs_its_passphrase() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"from a writer\n");
    let pass = sb.path("writer-pass");
    write(&pass, b"writer's own passphrase\n");
    let dir = sb.path("w1");
    let out = sb
        .run(&[
            "--json",
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            dir.to_str().unwrap(),
            "--name",
            "web-1",
            "--to-passphrase-file",
            pass.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(out["enrolled"]["name"], "web-1", "{out}");
    let identity = std::fs::read_to_string(dir.join("identity.json")).unwrap();
    assert!(
        identity.contains("\"sealed\"") && !identity.contains("\"plain\""),
        "{identity}"
    );
    let ks = format!("local:{}", dir.display());
    // Without the passphrase the keyring and identity do not open; with it the backup runs.
    let r = backup(&sb, &ks, &[], &src);
    assert_ne!(r.code, EXIT_OK, "{}", r.stderr);
    backup(
        &sb,
        &ks,
        &["--passphrase-file", pass.to_str().unwrap()],
        &src,
    )
    .ok();

    let writers = sb.run(&["--json", "key", "writers"]).ok().json();
    let w = &writers.as_array().unwrap()[0];
    assert_eq!(w["name"], "web-1", "{writers}");
    assert!(w.get("revoked").is_none(), "{writers}");
    let list = sb.run(&["key", "list"]).ok().out();
    assert!(list.contains("web-1"), "{list}");
    // The owner's snapshot list shows the writer's snapshot, and forget groups by writer.
    let f = sb
        .run(&["forget", "--keep-last", "1", "--dry-run"])
        .ok()
        .out();
    assert!(f.contains("writer web-1"), "{f}");
    // A writer cannot list or revoke writers.
    let r = sb.run(&[
        "--key-service",
        &ks,
        "--passphrase-file",
        pass.to_str().unwrap(),
        "key",
        "revoke",
        "web-1",
    ]);
    assert_ne!(r.code, EXIT_OK, "{}", r.stderr);
    sb.run(&["key", "revoke", "web-1"]).ok();
    let writers = sb.run(&["--json", "key", "writers"]).ok().json();
    assert!(writers[0]["revoked"].is_string(), "{writers}");
    sb.run(&["key", "revoke", "web-1"]).code(EXIT_ERROR);
}

#[test]
fn rewrap_carries_the_owner_key_to_the_new_keyring() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"before the rotation\n");
    let w = sb.export_writer("writer", &[]);
    backup(&sb, &format!("local:{}", w.display()), &[], &src).ok();
    sb.run(&["backup", src.to_str().unwrap(), "--force"]).ok();
    let new = format!("local:{}", sb.path("new-keyring").display());
    sb.run(&["--key-service", &new, "key", "create"]).ok();
    let owner_before = std::fs::read(sb.repo().join("owner")).unwrap();
    let r = sb
        .run(&["--json", "rotate", "rewrap", "--to", &new])
        .ok()
        .json();
    assert_eq!(r["owner_resealed"], true, "{r}");
    assert_ne!(
        std::fs::read(sb.repo().join("owner")).unwrap(),
        owner_before
    );
    // The new keyring is the same owner: the writer's and the owner's snapshots verify.
    let snaps = sb
        .run(&["--key-service", &new, "--json", "snapshots"])
        .ok()
        .json();
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    sb.run(&["--key-service", &new, "check", "--read-data"])
        .ok();
    // Writers get keyrings of the new service; the owner enrolls them as before.
    let w2 = sb.export_writer("writer2", &["--key-service", &new]);
    assert!(w2.join("identity.json").exists());
    backup(&sb, &format!("local:{}", w2.display()), &[], &src).ok();
    sb.run(&["--key-service", &new, "check"]).ok();
    // A rerun has nothing left to reseal.
    let again = sb
        .run(&[
            "--key-service",
            &new,
            "--json",
            "rotate",
            "rewrap",
            "--to",
            &new,
        ])
        .ok()
        .json();
    assert_eq!(again["owner_resealed"], false, "{again}");
}

#[test]
fn a_replaced_owner_record_is_refused() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"x\n");
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    // A writer (or the custodian) puts another owner record in place: it cannot seal one the
    // owner's anchor opens.
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.repo().join("owner")).unwrap()).unwrap();
    rec["public"] = serde_json::Value::String("ab".repeat(32));
    write(&sb.repo().join("owner"), rec.to_string().as_bytes());
    let r = sb.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("owner"), "{}", r.stderr);
    // Deleting it is refused too: the config says the repository signs its objects.
    std::fs::remove_file(sb.repo().join("owner")).unwrap();
    let r = sb.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
}
