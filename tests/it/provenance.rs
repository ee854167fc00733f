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

/// The client's copy of the owner record (beside its configuration).
fn owner_copy(sb: &Sandbox) -> std::path::PathBuf {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.repo().join("config")).unwrap()).unwrap();
    let id = config["body"]["repository"].as_str().unwrap().to_string();
    sb.path("config").join("owners").join(format!("{id}.json"))
}

#[test]
fn a_replaced_owner_record_is_refused() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"x\n");
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    let genuine = std::fs::read(sb.repo().join("owner")).unwrap();
    assert_eq!(
        std::fs::read(owner_copy(&sb)).unwrap(),
        genuine,
        "the key holder keeps a copy"
    );
    // A writer (or the custodian) puts another owner record in place: it cannot seal one the
    // owner's anchor opens. A key holder with its copy restores the genuine record.
    let mut rec: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
    rec["public"] = serde_json::Value::String("ab".repeat(32));
    write(&sb.repo().join("owner"), rec.to_string().as_bytes());
    sb.run(&["snapshots"]).ok();
    assert_eq!(std::fs::read(sb.repo().join("owner")).unwrap(), genuine);
    // Without that copy (another key holder's machine), it is refused.
    std::fs::remove_file(owner_copy(&sb)).unwrap();
    write(&sb.repo().join("owner"), rec.to_string().as_bytes());
    let r = sb.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("owner"), "{}", r.stderr);
    // Deleting it is refused too: the config says the repository signs its objects.
    std::fs::remove_file(sb.repo().join("owner")).unwrap();
    let r = sb.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
}

/// Opens the repository through the library as the writer whose keyring (and identity) is in
/// `dir`: what a compromised backup host holds.
fn open_as_writer(
    sb: &Sandbox,
    dir: &std::path::Path,
) -> (tokio::runtime::Runtime, custody::repo::Repository) {
    use custody::identity::WriterIdentity;
    use custody::keyservice::{self, KeyServiceOptions};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = custody::store::open(
        sb.repo().to_str().unwrap(),
        &Default::default(),
        rt.handle(),
    )
    .unwrap();
    let config = custody::repo::Repository::read_config(rt.handle(), &store).unwrap();
    let url = format!("local:{}", dir.display());
    let keys = keyservice::open(&url, &KeyServiceOptions::default(), rt.handle()).unwrap();
    let id = WriterIdentity::open(&WriterIdentity::path_in(dir), None).unwrap();
    let repo = custody::repo::Repository::open(rt.handle().clone(), store, keys, config, Some(id))
        .unwrap();
    (rt, repo)
}

/// The guesses a writer can confirm: every 4-digit PIN in a one-line file.
fn confirmed_pins(w: &custody::repo::Repository) -> Vec<String> {
    let index = w.load_index().unwrap();
    (0..10_000)
        .map(|n| format!("{n:04}\n"))
        .filter(|pin| index.contains(custody::BlobId(w.chunk_id(pin.as_bytes()))))
        .collect()
}

/// A writer can confirm a guess of a small file by computing its chunk id and looking it up
/// in the index (docs/THREAT-MODEL.md §4). With `--no-dedup-below` the file's one chunk is
/// salted: no guess matches, the file still restores byte for byte, and an unchanged file
/// keeps its salted chunk on the next backup.
#[test]
fn small_files_stored_below_the_threshold_cannot_be_guessed() {
    let sb = Sandbox::new();
    sb.init();
    let w = sb.export_writer("writer", &[]);
    let plain = sb.path("plain");
    write(&plain.join("pin"), b"4242\n");
    sb.run(&["backup", plain.to_str().unwrap()]).ok();
    let (rt, writer) = open_as_writer(&sb, &w);
    assert_eq!(
        confirmed_pins(&writer),
        vec!["4242\n".to_string()],
        "the attack works"
    );
    drop((writer, rt));

    let private = sb.path("private");
    write(&private.join("pin"), b"7777\n");
    write(&private.join("same-pin"), b"7777\n");
    write(&private.join("large"), &random_bytes(300_000, 5));
    sb.run(&[
        "backup",
        private.to_str().unwrap(),
        "--no-dedup-below",
        "4KiB",
    ])
    .ok();
    let (rt, writer) = open_as_writer(&sb, &w);
    assert_eq!(
        confirmed_pins(&writer),
        vec!["4242\n".to_string()],
        "a salted pin was found"
    );
    drop((writer, rt));
    let out = sb.path("out");
    sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&private, &restored(&out, &private));
    let pin = sb.run(&["dump", "latest", "private/pin"]).ok();
    assert_eq!(pin.stdout, b"7777\n");
    // Unchanged: reused with its salt, so nothing new is stored and nothing matches.
    let again = sb.backup_json(&[private.to_str().unwrap()]);
    assert_eq!(again.files_unchanged, 3, "{again:?}");
    let out2 = sb.path("out2");
    sb.run(&["restore", "latest", "--target", out2.to_str().unwrap()])
        .ok();
    assert_same_tree(&private, &restored(&out2, &private));
    sb.run(&["check", "--read-data"]).ok();
    // The threshold is at most one chunk.
    sb.run(&[
        "backup",
        private.to_str().unwrap(),
        "--no-dedup-below",
        "1MiB",
    ])
    .code(EXIT_USAGE);
}

/// `key export --role writer --host H` pins a writer to its host: a snapshot it makes claiming
/// another host is refused (exit 3 from `snapshots`), never `latest --host` of that host, and
/// not counted by `forget`; its own host's snapshots are fine.
#[test]
fn a_writer_pinned_to_its_host_cannot_speak_for_another() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"genuine alpha\n");
    sb.run(&["backup", src.to_str().unwrap(), "--host", "alpha"])
        .ok();
    let dir = sb.path("web-1");
    sb.run(&[
        "key",
        "export",
        "--role",
        "writer",
        "--to",
        dir.to_str().unwrap(),
        "--name",
        "web-1",
        "--host",
        "web-1",
    ])
    .ok();
    let ks = format!("local:{}", dir.display());
    let evil = sb.path("evil");
    write(&evil.join("a.txt"), b"written by web-1\n");
    // The writer cannot tell (it does not read the roster): its backups succeed.
    sb.run(&[
        "--key-service",
        &ks,
        "backup",
        evil.to_str().unwrap(),
        "--host",
        "web-1",
    ])
    .ok();
    let claimed = sb.backup_json(&[
        "--key-service",
        &ks,
        evil.to_str().unwrap(),
        "--host",
        "alpha",
    ]);
    let r = sb.run(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains(&claimed.snapshot_id.to_hex())
            && r.stderr.contains("may only back up web-1"),
        "{}",
        r.stderr
    );
    let out = sb.path("out");
    sb.run(&[
        "restore",
        "latest",
        "--host",
        "alpha",
        "--target",
        out.to_str().unwrap(),
    ])
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
    let w = sb.run(&["--json", "key", "writers"]).ok().json();
    assert_eq!(w[0]["hosts"], serde_json::json!(["web-1"]), "{w}");
}

/// Review fixes: junk at `revoked/<writer>` (anyone who can put objects can write it) must
/// not get that writer's data deleted: prune refuses while a revocation does not verify, the
/// writer itself ignores it, and once the junk is gone its snapshot restores. A writer
/// identity left in the environment of a key holder's prune is refused, not obeyed.
#[test]
fn junk_revocations_and_writer_identities_never_drive_prune() {
    let sb = Sandbox::new();
    sb.init();
    let w = sb.export_writer("victim", &[]);
    let ks = format!("local:{}", w.display());
    let src = sb.path("src");
    write(&src.join("a.bin"), &random_bytes(400_000, 3));
    let snap = sb
        .backup_json(&["--key-service", &ks, src.to_str().unwrap()])
        .snapshot_id;
    let id: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("identity.json")).unwrap()).unwrap();
    let writer = id["writer"].as_str().unwrap().to_string();
    let junk = sb.repo().join("revoked").join(&writer);
    write(&junk, &random_bytes(4096, 9));
    let packs_before = list_ids(&sb.repo().join("data")).len();
    for _ in 0..2 {
        let r = sb.run(&["prune", "--grace", "0s"]).code(EXIT_INTEGRITY);
        assert!(
            r.stderr.contains("revoked") || r.stderr.contains("revocation"),
            "{}",
            r.stderr
        );
    }
    sb.run(&["forget", "--keep-last", "1", "--prune"])
        .code(EXIT_INTEGRITY);
    assert_eq!(list_ids(&sb.repo().join("data")).len(), packs_before);
    // The writer is not stopped by junk it cannot verify.
    sb.run(&[
        "--key-service",
        &ks,
        "backup",
        src.to_str().unwrap(),
        "--force",
    ])
    .ok();
    std::fs::remove_file(&junk).unwrap();
    let out = sb.path("out");
    sb.run(&["restore", &snap.to_hex(), "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out, &src));
    // A key holder whose environment still names a writer identity: prune is refused.
    let identity = w.join("identity.json");
    let r = sb
        .run_env(
            &[("CUSTODY_IDENTITY", identity.to_str().unwrap())],
            &["prune"],
        )
        .code(EXIT_USAGE);
    assert!(r.stderr.contains("signs as writer"), "{}", r.stderr);
    sb.run(&["prune"]).ok();
    sb.run(&["check", "--read-data"]).ok();
}

/// Review fix: a signed repository whose `owner` was deleted and whose config was set back to
/// format 1 (a writer holds the key that authenticates the config) is not "migrated" again:
/// a new owner key would leave every genuine object signed by a key nobody accepts.
#[test]
fn migrate_refuses_a_downgraded_signed_repository() {
    use custody::crypto::kdf::{self, label};
    use custody::format::config::Config;
    use custody::format::wrapped::{context, Purpose};
    use custody::KeyService;
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"signed\n");
    sb.run(&["backup", src.to_str().unwrap()]).ok();
    // The downgrade, done with what a writer holds (M, hence K_mac).
    let mut config: Config =
        serde_json::from_slice(&std::fs::read(sb.repo().join("config")).unwrap()).unwrap();
    let repo_id = config.body.repository;
    let keyring = custody::repo::default_keyring_dir(&sb.path("config"), &repo_id);
    let ring = custody::keyservice::LocalKeyring::open(&keyring, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = context(Purpose::RepositorySecret, &repo_id, &config.body.secret_id);
    let m = rt
        .block_on(ring.decrypt(&config.secret.wrapped, &ctx))
        .unwrap();
    config.body.format = 1;
    let k_mac = kdf::derive_key(repo_id.as_bytes(), &m, &[label::CONFIG_MAC]);
    config.mac = hex::encode(kdf::hmac_sha256(&k_mac, &config.body.mac_input()));
    write(
        &sb.repo().join("config"),
        &serde_json::to_vec_pretty(&config).unwrap(),
    );
    let genuine = std::fs::read(sb.repo().join("owner")).unwrap();
    std::fs::remove_file(sb.repo().join("owner")).unwrap();
    // A key holder without a copy of the owner record: refused, no new owner key.
    let copy = owner_copy(&sb);
    let kept = std::fs::read(&copy).unwrap();
    std::fs::remove_file(&copy).unwrap();
    let r = sb.run(&["migrate"]).code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("restore `owner`"), "{}", r.stderr);
    assert!(
        !sb.repo().join("owner").exists(),
        "no new owner key was made"
    );
    // With its copy: the downgrade is seen, the record restored, prune waits for `migrate`,
    // which raises the config again under the same owner key.
    write(&copy, &kept);
    sb.run(&["prune"]).code(EXIT_CONFLICT);
    assert_eq!(std::fs::read(sb.repo().join("owner")).unwrap(), genuine);
    sb.run(&["migrate"]).ok();
    sb.run(&["check", "--read-data"]).ok();
    let out = sb.path("out");
    sb.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &restored(&out, &src));
}

/// A writer's key service cannot unwrap session keys: its backup asks about one snapshot's
/// session, not about every session of the history (each refusal is an entry in the key
/// service's audit log, or in CloudTrail for AWS KMS), and still backs up.
#[test]
fn a_writers_backup_asks_the_key_service_about_one_session_only() {
    let sb = Sandbox::new();
    sb.init();
    let src = sb.path("src");
    for i in 0..8 {
        write(&src.join(format!("f{i}")), &random_bytes(20_000, i));
        sb.run(&["backup", src.to_str().unwrap()]).ok();
    }
    let writer = sb.export_writer("writer", &[]);
    let ks = format!("local:{}", writer.display());
    let log = sb.path("writer-audit.log");
    let out = sb
        .run(&[
            "--key-service",
            &ks,
            "--audit-log",
            log.to_str().unwrap(),
            "--json",
            "backup",
            src.to_str().unwrap(),
        ])
        .ok()
        .report::<custody::repo::backup::BackupOutput>();
    assert_eq!(out.files_processed, 8);
    let text = std::fs::read_to_string(&log).unwrap();
    let refused = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["purpose"] == "session-key" && v["operation"] == "decrypt-refused")
        .count();
    assert_eq!(refused, 1, "{text}");
}
