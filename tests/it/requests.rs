//! Restore requests under dual control (docs/FORMAT.md §19): 2 of 3 local keyrings. Each
//! holder answers with its own keyring alone; the requester restores once two approved, and
//! only the sessions of the requested snapshot are released. Attacks are made from outside:
//! editing objects in the store, or with the library's codecs and only the attacker's keys.

use std::path::{Path, PathBuf};

use crate::common::*;

const HOLDERS: [&str; 3] = ["alice", "bob", "carol"];

/// The 2-of-3 quorum over the sandbox's three keyrings, as the owner (all present) sees it.
fn owner_quorum(sb: &Sandbox) -> PathBuf {
    let holders: Vec<serde_json::Value> = HOLDERS
        .iter()
        .map(|n| serde_json::json!({"name": n, "key_service": format!("local:{}", sb.path(n).display())}))
        .collect();
    let file = sb.path("quorum.json");
    let body = serde_json::json!({"format": 1, "threshold": 2, "holders": holders});
    std::fs::write(&file, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
    file
}

/// One holder's view: the same quorum (with the owner anchor `key create` added), where
/// only this holder's keyring is reachable, as on that holder's own machine.
fn holder_view(sb: &Sandbox, owner: &Path, holder: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(owner).unwrap()).unwrap();
    for h in v["holders"].as_array_mut().unwrap() {
        if h["name"] != holder {
            h["key_service"] = format!(
                "local:{}",
                sb.path(&format!("elsewhere/{}", h["name"].as_str().unwrap()))
                    .display()
            )
            .into();
        }
    }
    let file = sb.path(&format!("{holder}.quorum.json"));
    std::fs::write(&file, v.to_string()).unwrap();
    format!("quorum:{}", file.display())
}

struct Setup {
    sb: Sandbox,
    src_a: PathBuf,
    snap_a: String,
    snap_b: String,
    view: std::collections::HashMap<&'static str, String>,
    /// What the holders' key services need (moto's endpoint, SoftHSM2's configuration).
    env: Vec<(&'static str, String)>,
}

/// Two snapshots with nothing in common, made by the owner (all three holders present).
fn setup() -> Setup {
    let sb = Sandbox::new();
    let file = owner_quorum(&sb);
    let ks = format!("quorum:{}", file.display());
    sb.run(&["--key-service", &ks, "key", "create"]).ok();
    sb.run(&["--key-service", &ks, "init"]).ok();
    let src_a = sb.path("src-a");
    write(&src_a.join("a.bin"), &random_bytes(200_000, 1));
    write(&src_a.join("sub/a.txt"), b"dual control");
    let src_b = sb.path("src-b");
    write(&src_b.join("b.bin"), &random_bytes(200_000, 2));
    let backup = |p: &Path| {
        sb.run(&[
            "--key-service",
            &ks,
            "--json",
            "backup",
            p.to_str().unwrap(),
        ])
        .ok()
        .json()["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let snap_a = backup(&src_a);
    let snap_b = backup(&src_b);
    let view = HOLDERS
        .iter()
        .map(|h| (*h, holder_view(&sb, &file, h)))
        .collect();
    Setup {
        sb,
        src_a,
        snap_a,
        snap_b,
        view,
        env: Vec::new(),
    }
}

impl Setup {
    fn as_holder(&self, holder: &str, args: &[&str]) -> Run {
        let mut all = vec!["--key-service", self.view[holder].as_str()];
        all.extend_from_slice(args);
        self.sb.run_env(&self.env, &all)
    }

    fn request(&self, snapshot: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "--json",
            "request",
            "create",
            snapshot,
            "--reason",
            "ticket 4711",
        ];
        args.extend_from_slice(extra);
        self.as_holder("alice", &args).ok().json()["request"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A backup job's writer quorum (`key export --role writer`): its key-service URL.
    fn export_writer(&self) -> String {
        let owner = format!("quorum:{}", self.sb.path("quorum.json").display());
        let dir = self.sb.path("writer");
        let to = dir.to_str().unwrap();
        self.sb
            .run_env(
                &self.env,
                &[
                    "--key-service",
                    &owner,
                    "key",
                    "export",
                    "--role",
                    "writer",
                    "--to",
                    to,
                ],
            )
            .ok();
        format!("quorum:{}", dir.join("quorum.json").display())
    }

    /// The repository through the library, opened with `key_service` alone (no identity) as
    /// request commands open it. Use it from the test's thread, never the runtime's.
    fn open_as(&self, key_service: &str) -> (tokio::runtime::Runtime, custody::repo::Repository) {
        use custody::keyservice::{self, KeyServiceOptions};
        use custody::repo::Repository;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = custody::store::open(
            self.sb.repo().to_str().unwrap(),
            &Default::default(),
            rt.handle(),
        )
        .unwrap();
        let config = Repository::read_config(rt.handle(), &store).unwrap();
        let keys =
            keyservice::open(key_service, &KeyServiceOptions::default(), rt.handle()).unwrap();
        let repo =
            Repository::open_for_requests(rt.handle().clone(), store, keys, config, None).unwrap();
        (rt, repo)
    }

    fn restore(&self, request: &str, target: &Path) -> Run {
        self.as_holder(
            "alice",
            &[
                "restore",
                "--request",
                request,
                "--target",
                target.to_str().unwrap(),
            ],
        )
    }
}

#[test]
fn two_approvals_restore_and_fewer_do_not() {
    let s = setup();
    // One holder alone cannot restore directly.
    let direct = s.sb.path("direct");
    let r = s
        .as_holder(
            "alice",
            &["restore", &s.snap_a, "--target", direct.to_str().unwrap()],
        )
        .code(EXIT_KEY_SERVICE);
    assert!(!direct.join("a.bin").exists(), "{}", r.stderr);

    let id = s.request(&s.snap_a, &[]);
    let out = s.sb.path("out");
    let r = s.restore(&id, &out).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("0 of 2 approvals"), "{}", r.stderr);

    s.as_holder("alice", &["request", "approve", &id]).ok();
    let r = s.restore(&id, &out).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("1 of 2 approvals (alice)") && r.stderr.contains("bob, carol"),
        "{}",
        r.stderr
    );
    // A holder answers once.
    let r = s
        .as_holder("alice", &["request", "approve", &id])
        .code(EXIT_USAGE);
    assert!(r.stderr.contains("already answered"), "{}", r.stderr);

    let log = s.sb.path("bob-audit.log");
    s.as_holder(
        "bob",
        &[
            "--audit-log",
            log.to_str().unwrap(),
            "request",
            "approve",
            &id,
            "--reason",
            "ok",
        ],
    )
    .ok();
    // Bob's own audit log names each part he released and the request it served.
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("\"release-part\"") && l.contains(&id)),
        "{lines}"
    );
    s.sb.run(&["audit", "verify", log.to_str().unwrap()]).ok();
    s.restore(&id, &out).ok();
    assert_same_tree(&s.src_a, &restored(&out, &s.src_a));

    // The request covers its snapshot only.
    let r = s
        .as_holder(
            "alice",
            &[
                "restore",
                &s.snap_b,
                "--request",
                &id,
                "--target",
                s.sb.path("b").to_str().unwrap(),
            ],
        )
        .code(EXIT_USAGE);
    assert!(r.stderr.contains("covers snapshot"), "{}", r.stderr);

    // What `request list --json` records: who approved, and the state.
    let list = s
        .as_holder("carol", &["--json", "request", "list"])
        .ok()
        .json();
    let req = &list["requests"][0];
    assert_eq!(req["state"], "approved", "{list}");
    assert_eq!(
        req["approved_by"],
        serde_json::json!(["alice", "bob"]),
        "{list}"
    );
    assert_eq!(req["reason"], "ticket 4711", "{list}");
}

#[test]
fn an_approval_releases_only_the_requested_snapshots_sessions() {
    let s = setup();
    let id = s.request(&s.snap_a, &[]);
    s.as_holder("alice", &["request", "approve", &id]).ok();
    s.as_holder("bob", &["request", "approve", &id]).ok();

    // The requester, with its own key service and the request's private key, and nothing else.
    let (_rt, repo) = s.open_as(&s.view["alice"]);
    let rid = repo.resolve_request(&id).unwrap();
    let status = repo.request_status(&rid).unwrap();
    let secret = repo
        .request_secret(&rid, &s.sb.path("config/requests"))
        .unwrap();
    let keys = repo.released_keys(&status, &secret).unwrap();
    let session_a = repo
        .snapshot_session(&repo.resolve_snapshot_id(&s.snap_a).unwrap())
        .unwrap();
    let b_id = repo.resolve_snapshot_id(&s.snap_b).unwrap();
    let session_b = repo.snapshot_session(&b_id).unwrap();
    let released: Vec<_> = keys.keys().copied().collect();
    repo.use_session_keys(keys);
    // Snapshot B's key was not released: the key service (one holder) refuses it.
    let err = repo.load_snapshot(&b_id).unwrap_err();
    assert!(err.is_key_service(), "{err}");
    assert!(released.contains(&session_a), "{released:?}");
    assert!(!released.contains(&session_b), "{released:?}");
}

#[test]
fn fail_denied_expired_and_foreign_requests_are_refused() {
    let s = setup();
    // Denied: one denial refuses the request, whatever the approvals.
    let id = s.request(&s.snap_a, &[]);
    s.as_holder("alice", &["request", "approve", &id]).ok();
    s.as_holder(
        "carol",
        &["request", "deny", &id, "--reason", "not authorised"],
    )
    .ok();
    s.as_holder("bob", &["request", "approve", &id]).ok();
    let r = s.restore(&id, &s.sb.path("denied")).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("denied by carol"), "{}", r.stderr);

    // Expired: refused, and the private key is destroyed.
    let id = s.request(&s.snap_a, &["--expires", "2s"]);
    s.as_holder("alice", &["request", "approve", &id]).ok();
    s.as_holder("bob", &["request", "approve", &id]).ok();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = s.restore(&id, &s.sb.path("expired")).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("expired") && r.stderr.contains("destroyed"),
        "{}",
        r.stderr
    );
    let keys = std::fs::read_dir(s.sb.path("config/requests"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(!keys.iter().any(|k| k.starts_with(&id[..8])), "{keys:?}");
    let r = s
        .as_holder("carol", &["request", "approve", &id])
        .code(EXIT_USAGE);
    assert!(r.stderr.contains("expired"), "{}", r.stderr);

    // Only the requester's machine holds the private key: another config folder cannot restore.
    let id = s.request(&s.snap_a, &[]);
    s.as_holder("alice", &["request", "approve", &id]).ok();
    s.as_holder("bob", &["request", "approve", &id]).ok();
    let other = s.sb.path("other-config");
    let r = s.sb.run_env(
        &[("CUSTODY_CONFIG_DIR", other.to_str().unwrap())],
        &[
            "--key-service",
            &s.view["alice"],
            "restore",
            "--request",
            &id,
            "--target",
            s.sb.path("o").to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, EXIT_KEY_SERVICE, "{}", r.stderr);
    assert!(
        r.stderr.contains("private key is not on this machine"),
        "{}",
        r.stderr
    );
}

#[test]
fn fail_tampered_and_moved_approvals_are_refused() {
    let s = setup();
    let id = s.request(&s.snap_a, &[]);
    s.as_holder("alice", &["request", "approve", &id]).ok();
    s.as_holder("bob", &["request", "approve", &id]).ok();
    let approvals = s.sb.repo().join("approvals");
    let names = list_ids(&approvals);
    assert_eq!(names.len(), 2);

    // The custodian flips a byte of one approval: it does not open (exit 3, named).
    let victim = approvals.join(&names[0]);
    let genuine = std::fs::read(&victim).unwrap();
    let mut bad = genuine.clone();
    let last = bad.len() - 20;
    bad[last] ^= 1;
    std::fs::write(&victim, &bad).unwrap();
    let r = s
        .as_holder("carol", &["request", "list"])
        .code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains(&names[0][..16]) || r.out().contains(&names[0][..16]),
        "{}{}",
        r.out(),
        r.stderr
    );
    std::fs::write(&victim, &genuine).unwrap();

    // An approval of another request, copied under this one's answers (a new name): its
    // envelope is bound to its own name, so it does not open either.
    let other = s.request(&s.snap_a, &[]);
    s.as_holder("carol", &["request", "approve", &other]).ok();
    let carol_answer = list_ids(&approvals)
        .into_iter()
        .find(|n| !names.contains(n))
        .unwrap();
    let copy = approvals.join(format!(
        "{}{}",
        &carol_answer[..62],
        if carol_answer.ends_with('0') {
            "11"
        } else {
            "00"
        }
    ));
    std::fs::copy(approvals.join(&carol_answer), &copy).unwrap();
    s.as_holder("carol", &["request", "list"])
        .code(EXIT_INTEGRITY);
    std::fs::remove_file(&copy).unwrap();

    // Restore still works with the genuine approvals.
    s.restore(&id, &s.sb.path("out")).ok();
    assert_same_tree(&s.src_a, &restored(&s.sb.path("out"), &s.src_a));
}

#[test]
fn a_writer_backs_up_but_cannot_approve_or_restore() {
    let s = setup();
    let wks = s.export_writer();
    let r =
        s.sb.run(&[
            "--key-service",
            &wks,
            "--json",
            "backup",
            s.src_a.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(r["bytes_new"], 0, "the writer deduplicates: {r}");
    let id = s.request(&s.snap_a, &[]);
    let r = s.sb.run(&[
        "--key-service",
        &wks,
        "request",
        "approve",
        &id,
        "--holder",
        "alice",
    ]);
    assert_eq!(r.code, EXIT_KEY_SERVICE, "{}", r.stderr);
    let r = s.sb.run(&[
        "--key-service",
        &wks,
        "restore",
        &s.snap_a,
        "--target",
        s.sb.path("w").to_str().unwrap(),
    ]);
    assert_ne!(r.code, EXIT_OK, "{}", r.stderr);
    assert!(!s.sb.path("w").join("a.bin").exists());
}

/// A writer holds the repository secret, so it can seal approvals of its own. Neither one
/// re-bound from another request nor one with made-up parts counts: restore refuses (exit 3)
/// and names the holder.
#[test]
fn fail_approvals_forged_with_a_writers_keys_are_refused() {
    use custody::format::request::{part_binding, Approval, Decision, ReleasedPart};

    let s = setup();
    let wks = s.export_writer();

    let id = s.request(&s.snap_a, &[]);
    let other = s.request(&s.snap_a, &[]);
    s.as_holder("alice", &["request", "approve", &id]).ok();
    s.as_holder("carol", &["request", "approve", &other]).ok();

    let forge = |rebind: bool| {
        let (_rt, w) = s.open_as(&wks);
        let rid = w.resolve_request(&id).unwrap();
        let oid = w.resolve_request(&other).unwrap();
        // Carol's genuine approval of the other request.
        let genuine = w
            .request_statuses()
            .unwrap()
            .0
            .into_iter()
            .find(|st| st.id == oid)
            .unwrap()
            .answers[0]
            .id;
        let mut a: Approval = w.load_object(&genuine).unwrap();
        a.request = rid;
        if !rebind {
            // Made-up parts, properly sealed to the request's public key.
            let public = w
                .request_status(&rid)
                .unwrap()
                .request
                .public_key()
                .unwrap();
            a.parts = a
                .parts
                .iter()
                .map(|p| {
                    let y = custody::crypto::Key32::generate().unwrap();
                    let binding = part_binding(&w.id(), &rid, "carol", &p.session, p.x);
                    ReleasedPart {
                        session: p.session,
                        x: p.x,
                        sealed: custody::crypto::sealed_box::seal(&public, &binding, &y).unwrap(),
                    }
                })
                .collect();
        }
        assert_eq!(a.decision, Decision::Approve);
        let forged = custody::id::ApprovalId::random().unwrap();
        w.save_object(&forged, &a).unwrap();
        forged
    };
    for (rebind, why) in [
        (true, "does not open with this request's key"),
        (false, "not the part it holds"),
    ] {
        let forged = forge(rebind);
        // Counted as carol's approval by anyone who cannot open the parts...
        let shown = s
            .as_holder("bob", &["--json", "request", "show", &id])
            .ok()
            .json();
        assert_eq!(shown["state"], "approved", "{shown}");
        // ...but the requester, who can, refuses it.
        let r = s.restore(&id, &s.sb.path("forged")).code(EXIT_INTEGRITY);
        assert!(
            r.stderr.contains(why) && r.stderr.contains("carol"),
            "{}",
            r.stderr
        );
        assert!(!s.sb.path("forged").join("a.bin").exists());
        std::fs::remove_file(s.sb.repo().join("approvals").join(forged.to_hex())).unwrap();
    }
}

/// `check` (the owner) verifies requests and answers, names a damaged one, and `repair
/// reach` records the reach of a snapshot whose record was lost.
#[test]
fn check_verifies_requests_and_repair_reach_restores_a_lost_record() {
    let s = setup();
    let owner = format!("quorum:{}", s.sb.path("quorum.json").display());
    let id = s.request(&s.snap_a, &[]);
    s.as_holder("alice", &["request", "approve", &id]).ok();
    let report =
        s.sb.run(&["--key-service", &owner, "--json", "check"])
            .ok()
            .json();
    assert_eq!(
        (report["requests"].as_u64(), report["approvals"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(report["without_reach"], 0, "{report}");

    // A request edited by the custodian: check names it (exit 3).
    let req =
        s.sb.repo()
            .join("requests")
            .join(list_ids(&s.sb.repo().join("requests"))[0].clone());
    let genuine = std::fs::read(&req).unwrap();
    let mut bad = genuine.clone();
    bad[60] ^= 4;
    std::fs::write(&req, &bad).unwrap();
    let r =
        s.sb.run(&["--key-service", &owner, "check"])
            .code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("requests/"), "{}", r.stderr);
    std::fs::write(&req, &genuine).unwrap();

    // A lost reach: no request can be made for that snapshot until the owner records it.
    let reach = s.sb.repo().join("reach");
    let lost = list_ids(&reach)
        .into_iter()
        .find(|n| n.starts_with(&s.snap_b[..8]))
        .unwrap();
    std::fs::remove_file(reach.join(&lost)).unwrap();
    let r = s.as_holder("alice", &["request", "create", &s.snap_b, "--reason", "x"]);
    assert_ne!(r.code, EXIT_OK);
    assert!(r.stderr.contains("repair reach"), "{}", r.stderr);
    s.sb.run(&["--key-service", &owner, "repair", "reach"]).ok();
    s.request(&s.snap_b, &[]);
}

/// Prune repacks a snapshot's blobs into packs of a new session: the reach follows, so a
/// request made afterwards still restores the whole snapshot.
#[test]
fn a_request_after_prune_repacked_its_data_still_restores() {
    let s = setup();
    let owner = format!("quorum:{}", s.sb.path("quorum.json").display());
    // Snapshot A's pack also holds a file that a later snapshot no longer has.
    std::fs::remove_file(s.src_a.join("a.bin")).unwrap();
    write(&s.src_a.join("c.txt"), b"new");
    let later =
        s.sb.run(&[
            "--key-service",
            &owner,
            "--json",
            "backup",
            s.src_a.to_str().unwrap(),
        ])
        .ok()
        .json()["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string();
    s.sb.run(&["--key-service", &owner, "forget", &s.snap_a])
        .ok();
    let p =
        s.sb.run(&[
            "--key-service",
            &owner,
            "--json",
            "prune",
            "--grace",
            "0s",
            "--max-unused",
            "0%",
        ])
        .ok()
        .json();
    assert!(
        p["mark"]["blobs_repacked"].as_u64() > Some(0),
        "nothing repacked: {p}"
    );
    s.sb.run(&[
        "--key-service",
        &owner,
        "--json",
        "prune",
        "--grace",
        "0s",
        "--max-unused",
        "0%",
    ])
    .ok();
    let id = s.request(&later, &[]);
    s.as_holder("bob", &["request", "approve", &id]).ok();
    s.as_holder("carol", &["request", "approve", &id]).ok();
    let out = s.sb.path("after-prune");
    s.restore(&id, &out).ok();
    assert_same_tree(&s.src_a, &restored(&out, &s.src_a));
}

/// Three holders in three kinds of place: a local keyring, a KMS key (moto's server) and an
/// HSM token (SoftHSM2). One holder cannot restore; one approval is not enough; the KMS and
/// HSM holders' approvals restore byte-identical; the token's data key is pinned by the
/// repository's policy from `init` on.
#[test]
fn three_kinds_of_holder_approve_a_restore() {
    use crate::common::services::{available, Moto, SoftHsm, SOFTHSM_MODULE};
    if !available("moto_server")
        || !available("softhsm2-util")
        || !Path::new(SOFTHSM_MODULE).exists()
    {
        return;
    }
    let moto = Moto::start(false);
    let hsm = SoftHsm::new();
    let sb = Sandbox::new();
    let mut env = moto.env();
    env.push(("SOFTHSM2_CONF", hsm.conf.display().to_string()));
    let kms = sb
        .run_env(
            &env,
            &["--json", "key", "create", "--key-service", "awskms:new"],
        )
        .ok()
        .json()["key_service"]
        .as_str()
        .unwrap()
        .to_string();
    let token = sb
        .run_env(
            &env,
            &[
                "--json",
                "key",
                "create",
                "--key-service",
                &hsm.reader_url(),
            ],
        )
        .ok()
        .json()["key_service"]
        .as_str()
        .unwrap()
        .to_string();
    // The printed URL has no PIN: the holder adds its own.
    let token = format!("{token}&pin-value=1111&data-pin-value=2222");
    let holders = serde_json::json!([
        {"name": "alice", "key_service": format!("local:{}", sb.path("alice").display())},
        {"name": "bob", "key_service": kms},
        {"name": "carol", "key_service": token},
    ]);
    let file = sb.path("quorum.json");
    std::fs::write(
        &file,
        serde_json::json!({"format": 1, "threshold": 2, "holders": holders}).to_string(),
    )
    .unwrap();
    let ks = format!("quorum:{}", file.display());
    let owner = |args: &[&str]| {
        let mut a = vec!["--key-service", ks.as_str()];
        a.extend_from_slice(args);
        sb.run_env(&env, &a)
    };
    owner(&["key", "create"]).ok();
    owner(&["init"]).ok();
    let pins = owner(&["--json", "key", "policy", "show"]).ok().json();
    assert!(
        pins["policy"]["pkcs11"]["data_key_sha256"][0].is_string(),
        "{pins}"
    );
    let src = sb.path("src");
    write(&src.join("a.bin"), &random_bytes(300_000, 5));
    write(&src.join("b.txt"), b"three places");
    let snap = owner(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .json()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let view: std::collections::HashMap<&'static str, String> = HOLDERS
        .iter()
        .map(|h| (*h, holder_view(&sb, &file, h)))
        .collect();
    let s = Setup {
        src_a: src.clone(),
        snap_a: snap.clone(),
        snap_b: snap,
        view,
        env,
        sb,
    };
    for holder in HOLDERS {
        let out = s.sb.path(&format!("alone-{holder}"));
        s.as_holder(holder, &["restore", &s.snap_a, "-t", out.to_str().unwrap()])
            .code(EXIT_KEY_SERVICE);
    }
    let id = s.request(&s.snap_a, &[]);
    s.as_holder("bob", &["request", "approve", &id]).ok();
    let out = s.sb.path("out");
    let r = s.restore(&id, &out).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("1 of 2 approvals (bob)"), "{}", r.stderr);
    s.as_holder("carol", &["request", "approve", &id]).ok();
    s.restore(&id, &out).ok();
    assert_same_tree(&s.src_a, &restored(&out, &s.src_a));
}

/// A request is named by a hash of what it asks: someone who holds the index key (a writer
/// here) and rewrites it with a public key of their own is refused (exit 3) before any
/// holder releases anything to it.
#[test]
fn fail_a_rewritten_request_is_refused() {
    use custody::format::request::RestoreRequest;
    let s = setup();
    let wks = s.export_writer();
    let id = s.request(&s.snap_a, &[]);
    {
        let (_rt, w) = s.open_as(&wks);
        let rid = w.resolve_request(&id).unwrap();
        let mut r: RestoreRequest = w.load_object(&rid).unwrap();
        let mine = custody::crypto::Key32::generate().unwrap();
        r.public = hex::encode(custody::crypto::sealed_box::public_key(&mine));
        w.save_object(&rid, &r).unwrap();
    }
    let r = s
        .as_holder("bob", &["request", "approve", &id])
        .code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains("not the request its name was made from"),
        "{}",
        r.stderr
    );
    assert!(list_ids(&s.sb.repo().join("approvals")).is_empty());
    s.as_holder("carol", &["request", "list"])
        .code(EXIT_INTEGRITY);
}
