//! A quorum key service (`quorum:FILE`, docs/FORMAT.md §11.4): 2 of 3 local keyrings. Every
//! key is split so that any two holders recover it and one alone cannot; a holder that is not
//! there takes no part, and too few holders is a key problem (exit 4) naming who took part.

use std::path::{Path, PathBuf};

use crate::common::*;

/// Writes a 2-of-3 quorum file over three keyring folders in the sandbox.
fn quorum_file(sb: &Sandbox) -> PathBuf {
    let holders: Vec<serde_json::Value> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n,
                "key_service": format!("local:{}", sb.path(n).display()),
            })
        })
        .collect();
    let file = sb.path("quorum.json");
    let body = serde_json::json!({"format": 1, "threshold": 2, "holders": holders});
    std::fs::write(&file, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
    file
}

fn away(p: &Path) -> PathBuf {
    let to = p.with_extension("away");
    std::fs::rename(p, &to).unwrap();
    to
}

#[test]
fn two_of_three_holders_restore_and_one_cannot() {
    let sb = Sandbox::new();
    let file = quorum_file(&sb);
    let ks = format!("quorum:{}", file.display());
    let q = |args: &[&str]| {
        let mut all = vec!["--key-service", ks.as_str()];
        all.extend_from_slice(args);
        sb.run(&all)
    };
    q(&["key", "create"]).ok();
    // The owner anchor's parts are in the file now, wrapped: no key bytes in clear.
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        written["anchor"].as_array().map(Vec::len),
        Some(3),
        "{written}"
    );
    q(&["init"]).ok();
    let src = sb.path("src");
    write(&src.join("a.bin"), &random_bytes(300_000, 7));
    write(&src.join("b.txt"), b"quorum");
    q(&["backup", src.to_str().unwrap()]).ok();
    let again = q(&["--json", "backup", src.to_str().unwrap()]).ok().json();
    assert_eq!(
        again["bytes_new"], 0,
        "dedup across quorum sessions: {again}"
    );
    // Every key record holds one part per holder.
    for e in std::fs::read_dir(sb.repo().join("keys")).unwrap() {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        assert_eq!(rec["algorithm"], "shamir-gf256/v1", "{rec}");
        assert_eq!(rec["kek"], "quorum:2-of-3:alice,bob,carol", "{rec}");
    }
    let all = sb.path("all");
    q(&["restore", "latest", "--target", all.to_str().unwrap()]).ok();
    assert_same_tree(&src, &restored(&all, &src));
    // One holder away: the other two are a quorum.
    let carol = away(&sb.path("carol"));
    let two = sb.path("two");
    q(&["restore", "latest", "--target", two.to_str().unwrap()]).ok();
    assert_same_tree(&src, &restored(&two, &src));
    // Two away: one holder is not enough, and the message says who took part.
    let bob = away(&sb.path("bob"));
    let one = sb.path("one");
    let r = q(&["restore", "latest", "--target", one.to_str().unwrap()]).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("needs 2 of 3 holders") && r.stderr.contains("(alice) took part"),
        "{}",
        r.stderr
    );
    assert!(!restored(&one, &src).join("b.txt").exists());
    std::fs::rename(bob, sb.path("bob")).unwrap();
    std::fs::rename(carol, sb.path("carol")).unwrap();
    // A holder's own keyring alone opens nothing of this repository.
    for holder in ["alice", "bob", "carol"] {
        let own = format!("local:{}", sb.path(holder).display());
        sb.run(&["--key-service", &own, "snapshots"])
            .code(EXIT_KEY_SERVICE);
    }
}

#[test]
fn fail_quorum_files_that_promise_nothing_are_refused() {
    let sb = Sandbox::new();
    let file = quorum_file(&sb);
    let ks = format!("quorum:{}", file.display());
    for (threshold, why) in [(1, "threshold 1 of 3"), (4, "threshold 4 of 3")] {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        v["threshold"] = threshold.into();
        std::fs::write(&file, v.to_string()).unwrap();
        let r = sb
            .run(&["--key-service", &ks, "key", "create"])
            .code(EXIT_USAGE);
        assert!(r.stderr.contains(why), "{}", r.stderr);
    }
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    v["threshold"] = 2.into();
    v["holders"][1]["name"] = "alice".into();
    std::fs::write(&file, v.to_string()).unwrap();
    let r = sb
        .run(&["--key-service", &ks, "key", "create"])
        .code(EXIT_USAGE);
    assert!(r.stderr.contains("distinct"), "{}", r.stderr);
}

/// `key export --role writer` of a quorum: the holders' writer keyrings and a quorum file
/// naming them, with the writer enrolled beside it. The writer backs up (signed, with dedup)
/// and can unwrap no session key, not even with all three holders' writer keyrings.
#[test]
fn a_quorum_writer_backs_up_and_cannot_read() {
    let sb = Sandbox::new();
    let file = quorum_file(&sb);
    let ks = format!("quorum:{}", file.display());
    sb.run(&["--key-service", &ks, "key", "create"]).ok();
    sb.run(&["--key-service", &ks, "init"]).ok();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"owner data");
    sb.run(&["--key-service", &ks, "backup", src.to_str().unwrap()])
        .ok();
    let w = sb.path("writer");
    let out = sb
        .run(&[
            "--key-service",
            &ks,
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            w.to_str().unwrap(),
            "--name",
            "job",
        ])
        .ok()
        .out();
    assert!(out.contains("enrolled writer \"job\""), "{out}");
    let wfile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("quorum.json")).unwrap()).unwrap();
    assert!(wfile.get("anchor").is_none(), "{wfile}");
    let wks = format!("quorum:{}", w.join("quorum.json").display());
    write(&src.join("b.txt"), b"written by the job");
    let v = sb
        .run(&[
            "--key-service",
            &wks,
            "--json",
            "backup",
            src.to_str().unwrap(),
        ])
        .ok()
        .json();
    // a.txt is deduplicated against the owner's snapshot: one new data chunk.
    assert!(v["bytes_new"].as_u64().unwrap() < 4096, "{v}");
    let target = sb.path("out");
    let r = sb
        .run(&[
            "--key-service",
            &wks,
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ])
        .code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("0 (none) took part"), "{}", r.stderr);
    // The holders restore what the writer stored, signed by the enrolled writer.
    sb.run(&[
        "--key-service",
        &ks,
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
    assert_same_tree(&src, &restored(&target, &src));
    sb.run(&["--key-service", &ks, "check"]).ok();
}

/// Replacing a holder (carol by dave) is a rewrap to the new quorum: every key is split again,
/// so dave's part works with any other holder's and carol's keyring takes no part any more.
#[test]
fn a_holder_is_replaced_by_rewrap() {
    let sb = Sandbox::new();
    let file = quorum_file(&sb);
    let old = format!("quorum:{}", file.display());
    sb.run(&["--key-service", &old, "key", "create"]).ok();
    sb.run(&["--key-service", &old, "init"]).ok();
    let src = sb.path("src");
    write(&src.join("a.txt"), b"kept across the change");
    sb.run(&["--key-service", &old, "backup", src.to_str().unwrap()])
        .ok();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    v["holders"][2] = serde_json::json!({
        "name": "dave",
        "key_service": format!("local:{}", sb.path("dave").display()),
    });
    v.as_object_mut().unwrap().remove("anchor");
    let file2 = sb.path("quorum2.json");
    std::fs::write(&file2, v.to_string()).unwrap();
    let new = format!("quorum:{}", file2.display());
    sb.run(&["--key-service", &new, "key", "create"]).ok();
    sb.run(&["--key-service", &old, "rotate", "rewrap", "--to", &new])
        .ok();
    // alice and dave (bob away) restore everything, and check is clean.
    let bob = sb.path("bob");
    std::fs::rename(&bob, sb.path("bob.away")).unwrap();
    let out = sb.path("out");
    sb.run(&[
        "--key-service",
        &new,
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ])
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
    // alice and carol under the old file: carol's parts are gone. The owner key is sealed
    // for the new quorum (refused as a key problem, naming it), and the data keys need two
    // of alice, bob and dave.
    let r = sb
        .run(&["--key-service", &old, "snapshots"])
        .code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("sealed for quorum:2-of-3:alice,bob,dave"),
        "{}",
        r.stderr
    );

    std::fs::rename(sb.path("bob.away"), &bob).unwrap();
    sb.run(&["--key-service", &new, "check"]).ok();
}

/// `--audit-log`: every key operation of every holder as a hash-chained JSON line; `audit
/// verify` finds an edited, a removed and a moved line (exit 3, naming the line).
#[test]
fn the_audit_log_chain_finds_edited_removed_and_moved_lines() {
    let sb = Sandbox::new();
    let file = quorum_file(&sb);
    let ks = format!("quorum:{}", file.display());
    let log = sb.path("audit.log");
    let l = log.to_str().unwrap();
    sb.run(&["--key-service", &ks, "key", "create"]).ok();
    sb.run(&["--key-service", &ks, "--audit-log", l, "init"])
        .ok();
    let src = sb.path("src");
    write(&src.join("a"), b"a");
    sb.run(&[
        "--key-service",
        &ks,
        "--audit-log",
        l,
        "backup",
        src.to_str().unwrap(),
    ])
    .ok();
    sb.run(&["--key-service", &ks, "--audit-log", l, "snapshots"])
        .ok();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 6, "{text}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "kek",
                "key_id",
                "operation",
                "prev",
                "purpose",
                "repository",
                "seq",
                "time"
            ],
            "{line}"
        );
    }
    let ok = sb.run(&["--json", "audit", "verify", l]).ok().json();
    assert_eq!(ok["entries"].as_u64(), Some(lines.len() as u64));
    let broken = |name: &str, body: Vec<String>| {
        let p = sb.path(name);
        std::fs::write(&p, body.join("\n") + "\n").unwrap();
        let r = sb
            .run(&["audit", "verify", p.to_str().unwrap()])
            .code(EXIT_INTEGRITY);
        r.stderr
    };
    let owned: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let mut edited = owned.clone();
    edited[1] = edited[1].replace("\"operation\":\"", "\"operation\":\"x");
    assert!(broken("edited", edited).contains("line 3"));
    let mut removed = owned.clone();
    removed.remove(2);
    assert!(broken("removed", removed).contains("line 3"));
    let mut moved = owned.clone();
    moved.swap(1, 2);
    assert!(broken("moved", moved).contains("line 2"));
}

/// The custodian edits a session's key record to list one holder's part twice (and drops
/// another): the duplicate counts once, and two genuine holders still recover the key.
#[test]
fn fail_a_part_listed_twice_counts_once() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sb = Sandbox::new();
    let file = quorum_file(&sb);
    let ks = format!("quorum:{}", file.display());
    sb.run(&["--key-service", &ks, "key", "create"]).ok();
    sb.run(&["--key-service", &ks, "init"]).ok();
    let src = sb.path("src");
    write(&src.join("a"), b"twice");
    sb.run(&["--key-service", &ks, "backup", src.to_str().unwrap()])
        .ok();
    let mut edited = 0;
    for e in std::fs::read_dir(sb.repo().join("keys")).unwrap() {
        let path = e.unwrap().path();
        let mut rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if rec["purpose"] != "session-key" {
            continue;
        }
        let mut parts: serde_json::Value =
            serde_json::from_slice(&b64.decode(rec["ciphertext"].as_str().unwrap()).unwrap())
                .unwrap();
        let list = parts["parts"].as_array_mut().unwrap();
        let first = list[0].clone();
        list.insert(1, first);
        list.remove(2); // bob's part goes; alice twice, then carol
        rec["ciphertext"] = b64.encode(serde_json::to_vec(&parts).unwrap()).into();
        std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
        edited += 1;
    }
    assert_eq!(edited, 1);
    let out = sb.path("out");
    sb.run(&[
        "--key-service",
        &ks,
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ])
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
    // With carol away, alice's two copies are still one holder: refused, not an internal error.
    std::fs::rename(sb.path("carol"), sb.path("carol.away")).unwrap();
    let r = sb.run(&[
        "--key-service",
        &ks,
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, EXIT_KEY_SERVICE, "{}", r.stderr);
    assert!(r.stderr.contains("1 (alice) took part"), "{}", r.stderr);
}

/// A quorum file may be TOML (named `*.toml`); `key create` writes the owner anchor back in
/// TOML, and the repository works as with JSON.
#[test]
fn a_toml_quorum_file_works_like_json() {
    let sb = Sandbox::new();
    let file = sb.path("quorum.toml");
    let mut text = String::from("format = 1\nthreshold = 2\n");
    for n in ["alice", "bob", "carol"] {
        text.push_str(&format!(
            "\n[[holders]]\nname = \"{n}\"\nkey_service = \"local:{}\"\n",
            sb.path(n).display()
        ));
    }
    std::fs::write(&file, text).unwrap();
    let ks = format!("quorum:{}", file.display());
    sb.run(&["--key-service", &ks, "key", "create"]).ok();
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains("[[anchor]]") && !written.trim_start().starts_with('{'),
        "{written}"
    );
    sb.run(&["--key-service", &ks, "init"]).ok();
    let src = sb.path("src");
    write(&src.join("t.txt"), b"toml");
    sb.run(&["--key-service", &ks, "backup", src.to_str().unwrap()])
        .ok();
    let out = sb.path("out");
    sb.run(&[
        "--key-service",
        &ks,
        "restore",
        "latest",
        "-t",
        out.to_str().unwrap(),
    ])
    .ok();
    assert_same_tree(&src, &restored(&out, &src));
    // A mistyped field is named.
    std::fs::write(&file, written.replace("threshold", "treshold")).unwrap();
    let r = sb
        .run(&["--key-service", &ks, "snapshots"])
        .code(EXIT_USAGE);
    assert!(r.stderr.contains("treshold"), "{}", r.stderr);
}
