//! S3 buckets on real S3 servers started on loopback: s3s-fs and moto's server. The same
//! conformance suite as the local store, the full CLI cycle, multipart uploads, and the
//! failures a bucket can produce.

use std::sync::Arc;

use crate::common::conformance::conformance;
use crate::common::services::{
    available, s3_env, sdk_config, Moto, S3sFs, S3_ACCESS_KEY, S3_SECRET_KEY,
};
use crate::common::*;
use custody::store::{S3Store, Store};

fn with_env(sb: &Sandbox, env: &[(&'static str, String)], args: &[&str]) -> Run {
    sb.run_env(env, args)
}

async fn conformance_on(endpoint: &str, key: &str, secret: &str, bucket: &str) {
    let conf = sdk_config(endpoint, key, secret);
    let store = S3Store::with_config(
        &format!("s3://{bucket}/some/prefix"),
        &conf,
        &Default::default(),
    )
    .unwrap();
    conformance(Arc::new(store) as Arc<dyn Store>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_conformance() {
    if !available("s3s-fs") {
        return;
    }
    let s = S3sFs::start();
    conformance_on(&s.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, "conformance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_s3_conformance() {
    if !available("moto_server") {
        return;
    }
    let m = Moto::start(false);
    conformance_on(&m.endpoint, "testing", "testing", "conformance").await;
}

/// init (creating the bucket), backup, dedup, restore, dump, check --read-data.
fn cli_cycle(env: &[(&'static str, String)]) {
    let sb = Sandbox::new();
    let repo = "s3://custody-test/team/repo";
    let run = |args: &[&str]| {
        let mut a = vec!["--repo", repo];
        a.extend_from_slice(args);
        with_env(&sb, env, &a)
    };
    run(&["init", "--pack-size-mib", "1"]).ok();
    run(&["init"]).code(EXIT_ERROR);
    let src = sb.path("src");
    write(&src.join("big.bin"), &random_bytes(3 << 20, 5));
    write(
        &src.join("text.txt"),
        &b"bucket custodian sees ciphertext only\n".repeat(20_000),
    );
    for i in 0..50 {
        write(
            &src.join(format!("small/{i}")),
            format!("small {i}").as_bytes(),
        );
    }
    let v = run(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .json();
    assert!(v["bytes_added"].as_u64().unwrap() > 0);
    let v2 = run(&["--json", "backup", src.to_str().unwrap(), "--force"])
        .ok()
        .json();
    assert_eq!(v2["bytes_new"], 0, "{v2}");
    let out = sb.path("out");
    run(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_same_tree(&src, &restored(&out, &src));
    assert_eq!(
        run(&["dump", "latest", "src/small/7"]).ok().stdout,
        b"small 7"
    );
    run(&["check", "--read-data"]).ok();
    let stats: custody::repo::stats::RepositoryStats = run(&["--json", "stats"]).ok().report();
    assert!(stats.packs >= 3, "{stats:?}");
}

#[test]
fn s3s_fs_cli_cycle_and_multipart() {
    if !available("s3s-fs") {
        return;
    }
    let s = S3sFs::start();
    cli_cycle(&s.env());
    // Packs above the multipart threshold go up in parts and read back whole. (On s3s-fs:
    // moto 5.2's CompleteMultipartUpload answer has a root element aws-sdk-s3 rejects.)
    let sb = Sandbox::new();
    let mut env = s.env();
    env.push(("CUSTODY_S3_MULTIPART_MIB", "5".into()));
    let run = |args: &[&str]| {
        let mut a = vec!["--repo", "s3://multipart"];
        a.extend_from_slice(args);
        with_env(&sb, &env, &a)
    };
    run(&["init", "--pack-size-mib", "24"]).ok();
    write(&sb.path("src/big.bin"), &random_bytes(40 << 20, 8));
    run(&["backup", sb.path("src").to_str().unwrap(), "--workers", "1"]).ok();
    run(&["check", "--read-data"]).ok();
    let out = sb.path("out");
    run(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_same_tree(&sb.path("src"), &restored(&out, &sb.path("src")));
    // The 24 MiB packs really went up in parts: s3s-fs keeps no upload leftovers either.
    let stats: custody::repo::stats::RepositoryStats = run(&["--json", "stats"]).ok().report();
    assert!(stats.pack_bytes > 40 << 20, "{stats:?}");
}

#[test]
fn moto_s3_cli_cycle() {
    if !available("moto_server") {
        return;
    }
    let m = Moto::start(false);
    cli_cycle(&m.env());
}

#[test]
fn s3_failures_are_clear() {
    if !available("s3s-fs") {
        return;
    }
    let s = S3sFs::start();
    let sb = Sandbox::new();
    // Unreachable endpoint.
    let dead = format!("http://127.0.0.1:{}", crate::common::services::free_port());
    let mut env = s3_env(&dead, S3_ACCESS_KEY, S3_SECRET_KEY);
    env.push(("AWS_MAX_ATTEMPTS", "2".into()));
    let r = with_env(&sb, &env, &["--repo", "s3://custody-b", "snapshots"]).code(EXIT_ERROR);
    assert!(r.stderr.contains("unavailable"), "{}", r.stderr);
    // Wrong credentials.
    let env = s3_env(&s.endpoint, S3_ACCESS_KEY, "wrong-secret");
    let r = with_env(&sb, &env, &["--repo", "s3://custody-b", "init"]).code(EXIT_ERROR);
    assert!(r.stderr.contains("denied"), "{}", r.stderr);
    // A missing bucket for anything but init.
    let r = with_env(
        &sb,
        &s.env(),
        &["--repo", "s3://no-such-bucket", "snapshots"],
    )
    .code(EXIT_ERROR);
    assert!(
        r.stderr.contains("not found") && r.stderr.contains("no-such-bucket"),
        "{}",
        r.stderr
    );
    // A name the server refuses (too short), answered by a bare 400.
    let r = with_env(&sb, &s.env(), &["--repo", "s3://b/repo", "init"]).code(EXIT_ERROR);
    assert!(r.stderr.contains("check the bucket name"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("SdkBody"),
        "SDK internals in the message: {}",
        r.stderr
    );
}

/// A loopback proxy in front of `upstream`. For each connection `watch()` makes a check that
/// sees every chunk the client sends and says whether to pass it on; when it says no, the
/// connection is cut both ways.
fn proxy<W>(upstream: &str, watch: impl Fn() -> W + Send + 'static) -> String
where
    W: FnMut(&[u8]) -> bool + Send + 'static,
{
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let up = upstream.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = std::net::TcpStream::connect(&up) else {
                return;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let mut pass = watch();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !pass(&buf[..n]) {
                        let _ = c_in.shutdown(std::net::Shutdown::Both);
                        let _ = s_out.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    format!("http://{addr}")
}

/// A proxy that forwards to the server but cuts any connection after `limit` bytes from the
/// client: uploads break mid-transfer, small requests pass.
fn breaking_proxy(upstream: &str, limit: usize) -> String {
    proxy(upstream, move || {
        let mut sent = 0usize;
        move |chunk: &[u8]| {
            sent += chunk.len();
            sent <= limit
        }
    })
}

#[test]
fn upload_broken_mid_transfer_commits_no_snapshot() {
    if !available("s3s-fs") {
        return;
    }
    let s = S3sFs::start();
    let sb = Sandbox::new();
    with_env(
        &sb,
        &s.env(),
        &["--repo", "s3://breaks", "init", "--pack-size-mib", "1"],
    )
    .ok();
    write(&sb.path("src/a.bin"), &random_bytes(4 << 20, 3));
    let mut env = s3_env(
        &breaking_proxy(&s.endpoint, 256 * 1024),
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
    );
    env.push(("AWS_MAX_ATTEMPTS", "2".into()));
    let r = with_env(
        &sb,
        &env,
        &[
            "--repo",
            "s3://breaks",
            "backup",
            sb.path("src").to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, EXIT_ERROR, "{}", r.stderr);
    // Straight to the server: no snapshot was committed, the repository still checks.
    let v = with_env(
        &sb,
        &s.env(),
        &["--repo", "s3://breaks", "--json", "snapshots"],
    )
    .ok()
    .json();
    assert_eq!(v.as_array().unwrap().len(), 0);
    with_env(&sb, &s.env(), &["--repo", "s3://breaks", "check"]).ok();
    // And the same backup through a working path succeeds.
    with_env(
        &sb,
        &s.env(),
        &[
            "--repo",
            "s3://breaks",
            "backup",
            sb.path("src").to_str().unwrap(),
        ],
    )
    .ok();
}

/// An unreachable S3 server is named in one plain line: each cause once, no SDK debug
/// structs (nothing listens on port 9 of loopback).
#[test]
fn an_unreachable_server_is_reported_in_plain_words() {
    let sb = Sandbox::new();
    let run = sb.run_env(
        &[
            ("AWS_ACCESS_KEY_ID", "x"),
            ("AWS_SECRET_ACCESS_KEY", "y"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ],
        &["--repo", "s3://nobucket/p", "snapshots"],
    );
    assert_eq!(run.code, EXIT_ERROR, "{}", run.stderr);
    let err = run.stderr.trim();
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(err.matches("os error 111").count(), 1, "{err}");
    assert!(
        !err.contains(" { ") && !err.contains("Some("),
        "debug form printed: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A proxy that forwards both ways and keeps every byte the client sent, for the test to read
/// the requests' headers afterwards.
fn recording_proxy(upstream: &str) -> (String, Arc<std::sync::Mutex<Vec<u8>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let addr = proxy(upstream, move || {
        let record = record.clone();
        move |chunk: &[u8]| {
            record.lock().unwrap().extend_from_slice(chunk);
            true
        }
    });
    (addr, seen)
}

/// The values of one header in everything a client sent.
fn header_values(sent: &[u8], name: &str) -> Vec<String> {
    let prefix = format!("{name}: ");
    String::from_utf8_lossy(sent)
        .split("\r\n")
        .filter_map(|line| {
            let (head, value) = line.split_at_checked(prefix.len())?;
            head.eq_ignore_ascii_case(&prefix)
                .then(|| value.to_string())
        })
        .collect()
}

/// Uploads to a loopback server leave their bodies out of the signature (nothing on loopback
/// can alter them in flight, and each object is authenticated when read); asked for, they are
/// signed, and the server checks them.
#[test]
fn upload_bodies_are_signed_only_where_that_protects_them() {
    if !available("s3s-fs") {
        return;
    }
    let s = S3sFs::start();
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    // The third case names the server as S3's own endpoint (loopback), beside a shared one
    // that is not loopback and that S3 requests never go to: the S3 one decides.
    for (case, sign) in [("auto", None), ("asked", Some("1")), ("s3-only", None)] {
        let sb = Sandbox::new();
        write(&sb.path("src/a.bin"), &random_bytes(3 << 20, 11));
        let (endpoint, sent) = recording_proxy(&s.endpoint);
        let mut env = s3_env(&endpoint, S3_ACCESS_KEY, S3_SECRET_KEY);
        if let Some(v) = sign {
            env.push(("CUSTODY_S3_SIGN_PAYLOAD", v.into()));
        }
        if case == "s3-only" {
            // TEST-NET-1 (RFC 5737): never connected to.
            env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
            env.push(("AWS_ENDPOINT_URL", "http://192.0.2.1:9".into()));
            env.push(("AWS_ENDPOINT_URL_S3", endpoint.clone()));
        }
        let bucket = format!("s3://signing-{case}");
        let run = |args: &[&str]| {
            let mut a = vec!["--repo", bucket.as_str()];
            a.extend_from_slice(args);
            with_env(&sb, &env, &a)
        };
        run(&["init", "--pack-size-mib", "1"]).ok();
        run(&["backup", sb.path("src").to_str().unwrap()]).ok();
        run(&["check", "--read-data"]).ok();
        let values = header_values(&sent.lock().unwrap(), "x-amz-content-sha256");
        let unsigned = values.iter().filter(|v| *v == "UNSIGNED-PAYLOAD").count();
        let hashed = values
            .iter()
            .filter(|v| v.len() == 64 && v.as_str() != EMPTY)
            .count();
        match sign {
            // Three packs at least, the snapshot, index and history records.
            None => assert!(unsigned >= 5, "{values:?}"),
            Some(_) => {
                assert_eq!(unsigned, 0, "{values:?}");
                assert!(hashed >= 5, "{values:?}");
            }
        }
    }
}
