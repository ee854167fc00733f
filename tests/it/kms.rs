//! The awskms: key service against moto's server (the AWS KMS API) on loopback: the full CLI
//! cycle, and the failures a key service can produce, each with its exit code and message.

use crate::common::services::{available, Moto};
use crate::common::*;

fn with_env(sb: &Sandbox, moto: &Moto, args: &[&str]) -> Run {
    sb.run_env(&moto.env(), args)
}

/// `key create` on KMS: two keys, and the URL that names them.
fn create_keys(sb: &Sandbox, moto: &Moto) -> String {
    let v = with_env(
        sb,
        moto,
        &["--json", "key", "create", "--key-service", "awskms:new"],
    )
    .ok()
    .json();
    let url = v["key_service"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("awskms:arn:aws:kms:")
            && url.contains("?meta=arn:")
            && url.contains("&owner=arn:"),
        "{url}"
    );
    url
}

/// A moto server, a sandbox, and KMS keys created in it: the URL that names them.
fn kms_sandbox() -> (Moto, Sandbox, String) {
    let moto = Moto::start(false);
    let sb = Sandbox::new();
    let ks = create_keys(&sb, &moto);
    (moto, sb, ks)
}

/// Runs custody with `--key-service ks` against the moto server.
fn with_keys(sb: &Sandbox, moto: &Moto, ks: &str, args: &[&str]) -> Run {
    let mut a = vec!["--key-service", ks];
    a.extend_from_slice(args);
    with_env(sb, moto, &a)
}

#[test]
fn kms_round_trip_and_key_list() {
    if !available("moto_server") {
        return;
    }
    let (moto, sb, ks) = kms_sandbox();
    let k = |args: &[&str]| with_keys(&sb, &moto, &ks, args);
    k(&["init", "--pack-size-mib", "1"]).ok();
    // No local keyring is made when a key service is given.
    assert!(!sb.path("config").exists());
    let src = sb.path("src");
    write(&src.join("a.bin"), &random_bytes(3 << 20, 9));
    write(&src.join("b.txt"), &b"kms-protected text\n".repeat(1000));
    k(&["backup", src.to_str().unwrap()]).ok();
    k(&["backup", src.to_str().unwrap(), "--force"]).ok();
    let out = sb.path("out");
    k(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_same_tree(&src, &restored(&out, &src));
    k(&["check", "--read-data"]).ok();
    use custody::keyservice::KekPurpose;
    let list: custody::repo::kek_usage::KekTable = k(&["--json", "key", "list"]).ok().report();
    let count = |purpose: KekPurpose| {
        list.0
            .iter()
            .find(|r| r.details.as_ref().is_some_and(|d| d.purpose == purpose))
            .map(|r| r.wrapped_keys)
    };
    assert_eq!(count(KekPurpose::Meta), Some(1), "{list:?}");
    assert_eq!(count(KekPurpose::Data), Some(2), "{list:?}");

    // The audit trail: one line per key operation, with key and context, never key bytes.
    let r = k(&["-v", "dump", "latest", "src/b.txt"]).ok();
    assert!(
        r.stderr.contains("custody::audit") && r.stderr.contains("operation=\"Decrypt\""),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("purpose=\"session-key\""));
}

#[test]
fn kms_failures_have_clear_errors_and_exit_codes() {
    if !available("moto_server") {
        return;
    }
    let (moto, sb, ks) = kms_sandbox();
    let k = |args: &[&str]| with_keys(&sb, &moto, &ks, args);
    k(&["init"]).ok();
    write(&sb.path("src/a"), b"data");
    k(&["backup", sb.path("src").to_str().unwrap()]).ok();

    // Unreachable endpoint: key-service exit code, naming the key and the operation.
    let mut c = sb.cmd(&["--key-service", &ks, "snapshots"]);
    for (key, v) in moto.env() {
        c.env(key, v);
    }
    c.env(
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", services_dead_port()),
    )
    .env("AWS_MAX_ATTEMPTS", "2");
    let started = std::time::Instant::now();
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_KEY_SERVICE), "{err}");
    assert!(
        err.contains("unavailable") && err.contains("Decrypt") && err.contains("arn:aws:kms"),
        "{err}"
    );
    // Bounded, not fast: the point is that it gives up instead of hanging (a loaded machine
    // may be slow, so the bound is far above the retry budget).
    assert!(
        started.elapsed().as_secs() < 120,
        "took {:?}",
        started.elapsed()
    );

    // A silent server (accepts, never answers): the attempt timeout ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = sb.cmd(&["--key-service", &ks, "snapshots"]);
    for (key, v) in moto.env() {
        c.env(key, v);
    }
    c.env(
        "AWS_ENDPOINT_URL",
        format!("http://{}", silent.local_addr().unwrap()),
    )
    .env("AWS_MAX_ATTEMPTS", "1")
    .env("CUSTODY_AWS_TIMEOUT_SECS", "2");
    let started = std::time::Instant::now();
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(EXIT_KEY_SERVICE),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        started.elapsed().as_secs() < 120,
        "the attempt timeout did not end it"
    );
    drop(silent);

    // A tampered wrapped key is an integrity failure, not a key-service one.
    let keys = list_ids(&sb.repo().join("keys"));
    let p = sb.repo().join("keys").join(&keys[0]);
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let ct = rec["ciphertext"].as_str().unwrap();
    let mut flipped = ct.to_string().into_bytes();
    let i = flipped.len() - 6;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let mut tampered = rec.clone();
    tampered["ciphertext"] = serde_json::Value::String(String::from_utf8(flipped).unwrap());
    std::fs::write(&p, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let r = k(&["snapshots"]).code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains(&format!("keys/{}", keys[0])),
        "{}",
        r.stderr
    );
    std::fs::write(&p, serde_json::to_vec(&rec).unwrap()).unwrap();
    k(&["snapshots"]).ok();

    // A data key the service refuses (here: one that does not exist, as after deletion;
    // moto does not model disabled keys): backup stops before writing anything.
    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let meta = ks.split("?meta=").nth(1).unwrap();
    let bad = format!("awskms:{missing}?meta={meta}");
    let before = list_ids(&sb.repo().join("snapshots")).len();
    let r = with_env(
        &sb,
        &moto,
        &[
            "--key-service",
            &bad,
            "backup",
            sb.path("src").to_str().unwrap(),
            "--force",
        ],
    )
    .code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("denied")
            && r.stderr.contains("GenerateDataKey")
            && r.stderr.contains(missing),
        "{}",
        r.stderr
    );
    assert_eq!(
        list_ids(&sb.repo().join("snapshots")).len(),
        before,
        "a snapshot was committed"
    );
    assert_eq!(
        list_ids(&sb.repo().join("keys")).len(),
        1,
        "a key record was written for a key never wrapped"
    );
    k(&["backup", sb.path("src").to_str().unwrap(), "--force"]).ok();
}

#[test]
fn kms_wrong_credentials_are_denied() {
    if !available("moto_server") {
        return;
    }
    let open = Moto::start(false);
    let sb = Sandbox::new();
    let ks = create_keys(&sb, &open);
    with_env(&sb, &open, &["--key-service", &ks, "init"]).ok();
    // A server that checks signatures and policies: unknown credentials are refused.
    let strict = Moto::start(true);
    let r = with_env(&sb, &strict, &["--key-service", &ks, "snapshots"]).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("denied") && r.stderr.contains("Decrypt"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("testing"),
        "credentials leaked into the message"
    );
}

fn services_dead_port() -> u16 {
    // Bound and closed again: nothing listens there.
    crate::common::services::free_port()
}

/// A loopback proxy in front of moto that answers the first `throttle` requests with KMS's
/// ThrottlingException, then forwards connections untouched. Returns the address and a
/// counter of throttled requests.
fn throttling_proxy(
    upstream: String,
    throttle: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    let up = upstream.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            if seen.load(Ordering::SeqCst) < throttle {
                // Read the whole request, then refuse it the way KMS does when throttling.
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                seen.fetch_add(1, Ordering::SeqCst);
                let msg = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                let _ = write!(
                    client,
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: ThrottlingException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                    msg.len()
                );
                continue;
            }
            let server = std::net::TcpStream::connect(&up).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            let (mut s3, mut c3) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s3, &mut c3);
                let _ = c3.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (format!("http://{addr}"), count)
}

#[test]
fn kms_throttling_is_retried_with_backoff_then_reported() {
    if !available("moto_server") {
        return;
    }
    let moto = Moto::start(false);
    let sb = Sandbox::new();
    let ks = create_keys(&sb, &moto);
    with_env(&sb, &moto, &["--key-service", &ks, "init"]).ok();
    let through = |proxy: &str, attempts: &str| {
        let mut c = sb.cmd(&["--key-service", &ks, "snapshots"]);
        for (k, v) in moto.env() {
            c.env(k, v);
        }
        c.env("AWS_ENDPOINT_URL", proxy)
            .env("AWS_MAX_ATTEMPTS", attempts);
        c.output().unwrap()
    };
    // Throttled twice, then served: the SDK's retries carry the command through.
    let (proxy, count) = throttling_proxy(moto.endpoint.clone(), 2);
    let o = through(&proxy, "4");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Throttled past the retry budget: a key-service error that says so.
    let (proxy, count) = throttling_proxy(moto.endpoint.clone(), usize::MAX);
    let o = through(&proxy, "3");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_KEY_SERVICE), "{err}");
    assert!(
        err.contains("Throttling") && err.contains("unavailable"),
        "{err}"
    );
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "expected 3 attempts"
    );
}

#[test]
fn kms_refuses_records_naming_a_key_it_was_not_given() {
    if !available("moto_server") {
        return;
    }
    let moto = Moto::start(false);
    let sb = Sandbox::new();
    let ks1 = create_keys(&sb, &moto);
    let ks2 = create_keys(&sb, &moto);
    with_env(&sb, &moto, &["--key-service", &ks1, "init"]).ok();
    write(&sb.path("src/a"), b"x");
    with_env(
        &sb,
        &moto,
        &[
            "--key-service",
            &ks1,
            "backup",
            sb.path("src").to_str().unwrap(),
        ],
    )
    .ok();
    // As if the custodian had swapped in records wrapped under a key of its own choosing.
    with_env(
        &sb,
        &moto,
        &["--key-service", &ks1, "rotate", "rewrap", "--to", &ks2],
    )
    .ok();
    // A job still configured with the old key: a key problem (exit 4) that names the key the
    // repository uses now and says what to change.
    let r = with_env(&sb, &moto, &["--key-service", &ks1, "snapshots"]).code(EXIT_KEY_SERVICE);
    let (data, meta) = ks2
        .trim_start_matches("awskms:")
        .split_once("?meta=")
        .unwrap();
    let meta = meta.split('&').next().unwrap();
    assert!(
        (r.stderr.contains(data) || r.stderr.contains(meta))
            && r.stderr.contains("CUSTODY_KEY_SERVICE"),
        "{}",
        r.stderr
    );
    with_env(&sb, &moto, &["--key-service", &ks2, "snapshots"]).ok();
}

/// Writer provenance on KMS (docs/FORMAT.md §17.1): `key create` makes an HMAC owner key;
/// a writer's URL leaves out `owner=` and needs the identity a key holder enrolled for it;
/// the owner restores what the writer stored, and rotates to new KMS keys carrying the owner
/// key along.
#[test]
fn kms_writer_signs_with_its_identity() {
    if !available("moto_server") {
        return;
    }
    let (moto, sb, ks) = kms_sandbox();
    let k = |args: &[&str]| with_keys(&sb, &moto, &ks, args);
    k(&["init", "--pack-size-mib", "1"]).ok();
    assert!(sb.repo().join("owner").exists());
    let writer_url = ks.split("&owner=").next().unwrap().to_string();
    assert!(!writer_url.contains("owner="), "{writer_url}");
    let src = sb.path("src");
    write(&src.join("a.txt"), b"written by a KMS writer\n");
    let w = |args: &[&str]| with_keys(&sb, &moto, &writer_url, args);
    let r = w(&["backup", src.to_str().unwrap()]).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("owner="), "{}", r.stderr);
    let ids = sb.path("kms-writer");
    let out = k(&[
        "key",
        "export",
        "--role",
        "writer",
        "--to",
        ids.to_str().unwrap(),
    ])
    .ok()
    .out();
    assert!(out.contains("--identity"), "{out}");
    let identity = ids.join("identity.json");
    let id_arg = identity.to_str().unwrap();
    w(&["--identity", id_arg, "backup", src.to_str().unwrap()]).ok();
    let restored = sb.path("restored");
    k(&["restore", "latest", "--target", restored.to_str().unwrap()]).ok();
    assert_same_tree(&src, &crate::common::restored(&restored, &src));
    k(&["check", "--read-data"]).ok();
    // Rotation to new KMS keys reseals the owner key: the writer's snapshot still verifies.
    let ks2 = create_keys(&sb, &moto);
    let r = k(&["--json", "rotate", "rewrap", "--to", &ks2]).ok().json();
    assert_eq!(r["owner_resealed"], true, "{r}");
    with_keys(&sb, &moto, &ks2, &["check", "--read-data"]).ok();
}

/// A rewrap inside KMS (ReEncrypt) takes only records wrapped by a key the old service was
/// given: records swapped in under a key of the custodian's choosing are refused (exit 4,
/// nothing changed), not laundered under the owner's new key.
#[test]
fn kms_rewrap_refuses_a_source_key_it_was_not_given() {
    if !available("moto_server") {
        return;
    }
    let moto = Moto::start(false);
    let sb = Sandbox::new();
    let ks1 = create_keys(&sb, &moto);
    let theirs = create_keys(&sb, &moto);
    let ks3 = create_keys(&sb, &moto);
    with_env(&sb, &moto, &["--key-service", &ks1, "init"]).ok();
    write(&sb.path("src/a"), b"x");
    let src = sb.path("src");
    with_env(
        &sb,
        &moto,
        &["--key-service", &ks1, "backup", src.to_str().unwrap()],
    )
    .ok();
    // The records now name a key the owner's configuration does not hold.
    with_env(
        &sb,
        &moto,
        &["--key-service", &ks1, "rotate", "rewrap", "--to", &theirs],
    )
    .ok();
    let keys = |sb: &Sandbox| -> Vec<Vec<u8>> {
        let mut v: Vec<_> = std::fs::read_dir(sb.repo().join("keys"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        v.sort();
        v
    };
    let before = keys(&sb);
    let r = with_env(
        &sb,
        &moto,
        &["--key-service", &ks1, "rotate", "rewrap", "--to", &ks3],
    );
    assert_eq!(r.code, EXIT_KEY_SERVICE, "{}", r.stderr);
    assert!(r.stderr.contains("ReEncrypt"), "{}", r.stderr);
    assert_eq!(keys(&sb), before, "records changed");
}

/// Given no key service and holding no local keyring, a key holder reads with the KMS keys
/// the repository's records name, and is told so; it never writes with them: a record the
/// custodian edited could name a key of the custodian's choosing, which must never receive
/// a new session key.
#[test]
fn kms_keys_named_by_the_repository_read_but_never_write() {
    if !available("moto_server") {
        return;
    }
    let (moto, sb, ks) = kms_sandbox();
    let k = |args: &[&str]| with_keys(&sb, &moto, &ks, args);
    k(&["init"]).ok();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"read with the recorded keys\n");
    k(&["backup", src.to_str().unwrap()]).ok();

    let plain = |args: &[&str]| with_env(&sb, &moto, args);
    let r = plain(&["--json", "snapshots"]).ok();
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert!(
        r.stderr
            .contains("reading with the AWS KMS keys the repository names"),
        "{}",
        r.stderr
    );
    let out = sb.path("out");
    plain(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_same_tree(&src, &restored(&out, &src));
    // It opens as a reader: nothing is signed or changed with keys the store named.
    let forget = plain(&["forget", "--keep-last", "1"]);
    assert_ne!(forget.code, EXIT_OK, "{}", forget.stderr);
    let tag = plain(&["tag", "latest", "--add", "x"]);
    assert_ne!(tag.code, EXIT_OK, "{}", tag.stderr);

    // A key the custodian made, named in a record: still nothing is wrapped with it.
    let theirs = with_env(
        &sb,
        &moto,
        &["--json", "key", "create", "--key-service", "awskms:theirs"],
    )
    .ok()
    .json()["key_service"]
        .as_str()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    for id in list_ids(&sb.repo().join("keys")) {
        let p = sb.repo().join("keys").join(&id);
        let mut rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        rec["kek"] = serde_json::Value::String(theirs.clone());
        std::fs::write(&p, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    }
    let b = plain(&["backup", src.to_str().unwrap(), "--force"]).code(EXIT_KEY_SERVICE);
    assert!(
        b.stderr.contains("to write, give --key-service"),
        "{}",
        b.stderr
    );
    assert_eq!(list_ids(&sb.repo().join("snapshots")).len(), 1);
}
