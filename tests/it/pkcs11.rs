//! The pkcs11: key service against SoftHSM2 with token directories made per test: the CLI
//! round trip, a writer token that cannot read, keys that cannot leave the token, wrong PINs
//! and tampered wrapped keys.

use crate::common::services::{available, SoftHsm, SOFTHSM_MODULE};
use crate::common::*;

fn run(sb: &Sandbox, hsm: &SoftHsm, ks: &str, args: &[&str]) -> Run {
    let mut a = vec!["--key-service", ks];
    a.extend_from_slice(args);
    sb.run_env(&[("SOFTHSM2_CONF", &hsm.conf)], &a)
}

fn ready() -> bool {
    available("softhsm2-util") && std::path::Path::new(SOFTHSM_MODULE).exists()
}

#[test]
fn pkcs11_round_trip_writer_cannot_read() {
    if !ready() {
        return;
    }
    let hsm = SoftHsm::new();
    let sb = Sandbox::new();
    let (reader, writer) = (hsm.reader_url(), hsm.writer_url());
    let created = run(&sb, &hsm, &reader, &["key", "create"]).ok();
    // The data key's fingerprint (random hex) may hold "1111" by chance: left out.
    let shown: String = created
        .out()
        .split(['&', '?', '\n'])
        .filter(|p| !p.starts_with("data-key-sha256="))
        .collect();
    assert!(
        !shown.contains("1111") && !shown.contains("2222"),
        "PIN printed: {shown}"
    );
    run(&sb, &hsm, &reader, &["key", "create"]).code(EXIT_ERROR);
    let init = run(&sb, &hsm, &reader, &["init", "--pack-size-mib", "1"]).ok();
    assert!(!init.out().contains("pin"), "{}", init.out());

    let src = sb.path("src");
    write(&src.join("a.bin"), &random_bytes(2 << 20, 4));
    write(&src.join("b.txt"), b"held by the HSM");
    // The repository signs its objects: the writer's token alone is not enough, it needs the
    // identity a key holder enrolls for it (docs/FORMAT.md §17.3).
    let r = run(&sb, &hsm, &writer, &["backup", src.to_str().unwrap()]).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("identity"), "{}", r.stderr);
    let ids = sb.path("writer-identity");
    let exported = run(
        &sb,
        &hsm,
        &reader,
        &[
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            ids.to_str().unwrap(),
            "--name",
            "hsm-writer",
        ],
    )
    .ok();
    assert!(exported.out().contains("--identity"), "{}", exported.out());
    let identity = ids.join("identity.json");
    let writer_run = |args: &[&str]| {
        let mut a = vec!["--identity", identity.to_str().unwrap()];
        a.extend_from_slice(args);
        run(&sb, &hsm, &writer, &a)
    };
    // The writer backs up...
    writer_run(&["backup", src.to_str().unwrap()]).ok();
    // ...but cannot read anything back.
    for args in [
        vec!["snapshots"],
        vec!["dump", "latest", "src/b.txt"],
        vec!["check"],
    ] {
        let r = writer_run(&args).code(EXIT_KEY_SERVICE);
        assert!(r.stderr.contains("private half"), "{}", r.stderr);
        assert!(!String::from_utf8_lossy(&r.stdout).contains("held by the HSM"));
    }
    let out = sb.path("out");
    writer_run(&["restore", "latest", "--target", out.to_str().unwrap()]).code(EXIT_KEY_SERVICE);
    assert!(!restored(&out, &src).join("b.txt").exists());
    // The key holder restores everything, and the writer's and holder's snapshots mix.
    run(
        &sb,
        &hsm,
        &reader,
        &["backup", src.to_str().unwrap(), "--force"],
    )
    .ok();
    run(
        &sb,
        &hsm,
        &reader,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
    run(&sb, &hsm, &reader, &["check", "--read-data"]).ok();
    let list: custody::repo::kek_usage::KekTable =
        run(&sb, &hsm, &reader, &["--json", "key", "list"])
            .ok()
            .report();
    let data = list
        .0
        .iter()
        .find(|r| {
            r.details
                .as_ref()
                .is_some_and(|d| d.purpose == custody::keyservice::KekPurpose::Data)
        })
        .unwrap();
    assert_eq!(data.wrapped_keys, 2, "{list:?}");
    assert!(data.details.as_ref().unwrap().can_decrypt);
}

#[test]
fn pkcs11_wrong_pin_and_tampered_wrap() {
    if !ready() {
        return;
    }
    let hsm = SoftHsm::new();
    let sb = Sandbox::new();
    let reader = hsm.reader_url();
    run(&sb, &hsm, &reader, &["key", "create"]).ok();
    run(&sb, &hsm, &reader, &["init"]).ok();
    write(&sb.path("src/a"), b"x");
    run(
        &sb,
        &hsm,
        &reader,
        &["backup", sb.path("src").to_str().unwrap()],
    )
    .ok();

    let wrong = hsm.writer_url().replace("pin-value=1111", "pin-value=9999");
    let r = run(&sb, &hsm, &wrong, &["snapshots"]).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("PIN") && !r.stderr.contains("9999"),
        "{}",
        r.stderr
    );

    let missing_token = hsm.writer_url().replace("token=writer", "token=nosuch");
    let r = run(&sb, &hsm, &missing_token, &["snapshots"]).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("nosuch"), "{}", r.stderr);

    let keys = list_ids(&sb.repo().join("keys"));
    let p = sb.repo().join("keys").join(&keys[0]);
    let orig = std::fs::read(&p).unwrap();
    let mut rec: serde_json::Value = serde_json::from_slice(&orig).unwrap();
    let ct = rec["ciphertext"].as_str().unwrap().to_string();
    let mut b = ct.into_bytes();
    let i = b.len() / 2;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    rec["ciphertext"] = serde_json::Value::String(String::from_utf8(b).unwrap());
    std::fs::write(&p, serde_json::to_vec(&rec).unwrap()).unwrap();
    let r = run(&sb, &hsm, &reader, &["snapshots"]).code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains(&format!("keys/{}", keys[0])),
        "{}",
        r.stderr
    );
}

/// The KEKs are generated sensitive and non-extractable: their values cannot be read out.
#[test]
fn pkcs11_keys_never_leave_the_token() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    if !ready() {
        return;
    }
    let hsm = SoftHsm::new();
    let sb = Sandbox::new();
    run(&sb, &hsm, &hsm.reader_url(), &["key", "create"]).ok();
    // This test binary's only in-process use of the module: point it at this test's tokens.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let ctx = Pkcs11::new(SOFTHSM_MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    for (label, pin, class, name, secret_part) in [
        (
            "writer",
            "1111",
            ObjectClass::SECRET_KEY,
            "custody-meta",
            AttributeType::Value,
        ),
        (
            "reader",
            "2222",
            ObjectClass::PRIVATE_KEY,
            "custody-data",
            AttributeType::PrivateExponent,
        ),
        // The owner's HMAC key (docs/FORMAT.md §17.1), made by `key create` beside the
        // private half.
        (
            "reader",
            "2222",
            ObjectClass::SECRET_KEY,
            "custody-owner",
            AttributeType::Value,
        ),
    ] {
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim() == label)
            .unwrap();
        let s = ctx.open_ro_session(slot).unwrap();
        s.login(UserType::User, Some(&pin.to_string().into()))
            .unwrap();
        let h = s
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(name.as_bytes().to_vec()),
            ])
            .unwrap()[0];
        let attrs = s
            .get_attributes(
                h,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Modifiable,
                ],
            )
            .unwrap();
        // Fixed once made: no one turns on extraction or another use later.
        assert!(
            attrs.contains(&Attribute::Modifiable(false)),
            "{name}: {attrs:?}"
        );
        assert!(
            attrs.contains(&Attribute::Sensitive(true)),
            "{name}: {attrs:?}"
        );
        assert!(
            attrs.contains(&Attribute::Extractable(false)),
            "{name}: {attrs:?}"
        );
        let info = s.get_attribute_info(h, &[secret_part]).unwrap();
        assert!(
            matches!(info[0], AttributeInfo::Sensitive),
            "{name}: value readable: {info:?}"
        );
    }
    // The writer token holds no private half at all.
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim() == "writer")
        .unwrap();
    let s = ctx.open_ro_session(slot).unwrap();
    s.login(UserType::User, Some(&"1111".to_string().into()))
        .unwrap();
    let private = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert!(private.is_empty());
    // Nor the owner's key: a writer cannot sign as the owner.
    let owner = s
        .find_objects(&[Attribute::Label(b"custody-owner".to_vec())])
        .unwrap();
    assert!(owner.is_empty());
}

#[test]
fn pins_never_reach_help_or_errors() {
    let sb = Sandbox::new();
    let url = "pkcs11:token=t;object=o?module-path=/nonexistent/lib.so&pin-value=4242";
    let o = sb
        .cmd(&["--help"])
        .env("CUSTODY_KEY_SERVICE", url)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout).contains("4242"));
    let r = sb.run(&["--key-service", url, "key", "create"]);
    assert_eq!(r.code, EXIT_KEY_SERVICE, "{}", r.stderr);
    assert!(!r.stderr.contains("4242"), "{}", r.stderr);
}

/// Someone with the writer PIN adds a public key of their own under custody's label on the
/// writer token (the review's key-substitution attack): the writer refuses to wrap with an
/// ambiguous label (exit 4) instead of taking the first match, and key holders wrap with the
/// public half on their own token, so the owner keeps reading every new session.
#[test]
fn pkcs11_a_substituted_public_key_is_never_used() {
    if !ready() || !available("openssl") {
        return;
    }
    let hsm = SoftHsm::new();
    let sb = Sandbox::new();
    let (reader, writer) = (hsm.reader_url(), hsm.writer_url());
    run(&sb, &hsm, &reader, &["key", "create"]).ok();
    run(&sb, &hsm, &reader, &["init", "--pack-size-mib", "1"]).ok();
    let ids = sb.path("writer-identity");
    run(
        &sb,
        &hsm,
        &reader,
        &[
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            ids.to_str().unwrap(),
        ],
    )
    .ok();
    let identity = ids.join("identity.json");
    // The attacker's key pair, imported into the writer token under custody's data label.
    let pem = sb.path("attacker.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let imported = std::process::Command::new("softhsm2-util")
        .arg("--import")
        .arg(&pem)
        .args([
            "--token",
            "writer",
            "--label",
            "custody-data",
            "--id",
            "0a0b",
            "--pin",
            "1111",
        ])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(imported.success());
    let src = sb.path("src");
    write(&src.join("a.txt"), b"for the owner only");
    let r = run(
        &sb,
        &hsm,
        &writer,
        &[
            "--identity",
            identity.to_str().unwrap(),
            "backup",
            src.to_str().unwrap(),
        ],
    )
    .code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("carry this label"), "{}", r.stderr);
    // The key holders' backups wrap with their own token's key and restore.
    run(&sb, &hsm, &reader, &["backup", src.to_str().unwrap()]).ok();
    let out = sb.path("out");
    run(
        &sb,
        &hsm,
        &reader,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
}

/// `key create` prints a URL that pins the data key's public half (`data-key-sha256`): with
/// it, a writer wraps only with that key; a token whose key is not the pinned one (as after a
/// replacement by whoever has the writer PIN) gets nothing wrapped (exit 4).
#[test]
fn pkcs11_the_data_key_is_pinned_by_its_fingerprint() {
    if !ready() {
        return;
    }
    let hsm = SoftHsm::new();
    let sb = Sandbox::new();
    let reader = hsm.reader_url();
    let created = run(&sb, &hsm, &reader, &["--json", "key", "create"])
        .ok()
        .json();
    let printed = created["key_service"].as_str().unwrap().to_string();
    let pin = printed
        .split("data-key-sha256=")
        .nth(1)
        .map(|s| s.split('&').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no pin in {printed}"));
    assert_eq!(pin.len(), 64, "{printed}");
    let pinned_reader = format!("{reader}&data-key-sha256={pin}");
    run(&sb, &hsm, &pinned_reader, &["init", "--pack-size-mib", "1"]).ok();
    let ids = sb.path("ids");
    run(
        &sb,
        &hsm,
        &pinned_reader,
        &[
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            ids.to_str().unwrap(),
        ],
    )
    .ok();
    let identity = ids.join("identity.json");
    let src = sb.path("src");
    write(&src.join("a.txt"), b"pinned");
    let writer = |fingerprint: &str| format!("{}&data-key-sha256={fingerprint}", hsm.writer_url());
    let id = identity.to_str().unwrap();
    run(
        &sb,
        &hsm,
        &writer(&pin),
        &["--identity", id, "backup", src.to_str().unwrap()],
    )
    .ok();
    let other = "ab".repeat(32);
    let r = run(
        &sb,
        &hsm,
        &writer(&other),
        &["--identity", id, "backup", src.to_str().unwrap(), "--force"],
    )
    .code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("is not the one key create made"),
        "{}",
        r.stderr
    );
    let out = sb.path("out");
    run(
        &sb,
        &hsm,
        &pinned_reader,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
}

/// A key policy naming token serials (docs/FORMAT.md §20): `key list` shows the token's
/// serial; a policy that does not name it is refused for this token (exit 4), one that does
/// is set.
#[test]
fn pkcs11_key_policy_names_tokens_by_serial() {
    if !ready() {
        return;
    }
    let hsm = SoftHsm::new();
    let sb = Sandbox::new();
    let reader = hsm.reader_url();
    run(&sb, &hsm, &reader, &["key", "create"]).ok();
    run(&sb, &hsm, &reader, &["init"]).ok();
    let list = run(&sb, &hsm, &reader, &["--json", "key", "list"])
        .ok()
        .json();
    // The holder's URL names two tokens (the writer's and the one with the private half).
    let serials: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["token_serial"].as_str().map(str::to_string))
        .collect();
    assert_eq!(serials.len(), 2, "key list shows the token serials: {list}");
    let serial = serials[0].clone();
    let policy = sb.path("policy.json");
    std::fs::write(
        &policy,
        r#"{"format": 1, "pkcs11": {"token_serials": ["0000000000000000"]}}"#,
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let r = run(&sb, &hsm, &reader, &["key", "policy", "set", p]).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("token serial") && r.stderr.contains(&serial),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("1111"), "PIN in an error: {}", r.stderr);
    let only_one = serde_json::json!({"format": 1, "pkcs11": {"token_serials": [&serials[1]]}});
    std::fs::write(&policy, only_one.to_string()).unwrap();
    run(&sb, &hsm, &reader, &["key", "policy", "set", p]).code(EXIT_KEY_SERVICE);
    let both = serde_json::json!({"format": 1, "pkcs11": {"token_serials": serials}});
    std::fs::write(&policy, both.to_string()).unwrap();
    run(&sb, &hsm, &reader, &["key", "policy", "set", p]).ok();
    let shown = run(&sb, &hsm, &reader, &["--json", "key", "policy", "show"])
        .ok()
        .json();
    assert_eq!(
        shown["policy"]["pkcs11"]["token_serials"][0],
        serial.as_str(),
        "{shown}"
    );
}

/// `init` pins the data key in the repository's signed key policy (docs/FORMAT.md §20), so a
/// writer whose URL carries no `data-key-sha256` still wraps only with that key. Here the
/// owner records a pin that is not the token's key (as if the token's key had been replaced
/// after init): the writer wraps nothing (exit 4).
#[test]
fn pkcs11_the_repository_policy_pins_the_data_key() {
    if !ready() {
        return;
    }
    let hsm = SoftHsm::new();
    let sb = Sandbox::new();
    let (reader, writer) = (hsm.reader_url(), hsm.writer_url());
    run(&sb, &hsm, &reader, &["key", "create"]).ok();
    run(&sb, &hsm, &reader, &["init", "--pack-size-mib", "1"]).ok();
    let shown = run(&sb, &hsm, &reader, &["--json", "key", "policy", "show"])
        .ok()
        .json();
    let pinned = shown["policy"]["pkcs11"]["data_key_sha256"][0]
        .as_str()
        .expect("init pins the data key")
        .to_string();
    assert_eq!(pinned.len(), 64, "{shown}");
    let ids = sb.path("ids");
    run(
        &sb,
        &hsm,
        &reader,
        &[
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            ids.to_str().unwrap(),
        ],
    )
    .ok();
    let id = ids.join("identity.json");
    let src = sb.path("src");
    write(&src.join("a.txt"), b"pinned by the repository");
    let backup = |force: &[&str]| {
        let mut a = vec![
            "--identity",
            id.to_str().unwrap(),
            "backup",
            src.to_str().unwrap(),
        ];
        a.extend_from_slice(force);
        run(&sb, &hsm, &writer, &a)
    };
    backup(&[]).ok();

    // The owner's signed policy now names another key (the library, as the owner).
    let other = "cd".repeat(32);
    {
        use custody::keyservice::policy::KeyPolicy;
        use custody::repo::Repository;
        std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = custody::store::open(
            sb.repo().to_str().unwrap(),
            &Default::default(),
            rt.handle(),
        )
        .unwrap();
        let config = Repository::read_config(rt.handle(), &store).unwrap();
        let keys = custody::keyservice::open(&reader, &Default::default(), rt.handle()).unwrap();
        let handle = rt.handle().clone();
        let copy = sb
            .path("config/owners")
            .join(format!("{}.json", config.body.repository.to_hex()));
        let other = other.clone();
        std::thread::spawn(move || {
            let mut repo =
                Repository::open_with_owner_copy(handle, store, keys, config, None, Some(&copy))
                    .unwrap();
            let mut p: KeyPolicy = repo.key_policy().unwrap().clone();
            p.pkcs11.data_key_sha256 = vec![other];
            repo.set_key_policy(p, Some(&copy)).unwrap();
        })
        .join()
        .unwrap();
    }
    let r = backup(&["--force"]).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("key policy pins") && r.stderr.contains(&other),
        "{}",
        r.stderr
    );
    // And `key policy set` refuses a pin that is not the token's key.
    let file = sb.path("p.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"format": 1, "pkcs11": {{"data_key_sha256": ["{}"]}}}}"#,
            "ef".repeat(32)
        ),
    )
    .unwrap();
    let r = run(
        &sb,
        &hsm,
        &reader,
        &["key", "policy", "set", file.to_str().unwrap()],
    )
    .code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains(&pinned), "{}", r.stderr);
}
