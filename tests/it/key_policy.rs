//! Key policies (docs/FORMAT.md §20) against moto's KMS server: keys only in us-east-1,
//! us-west-2 and us-gov-west-1. A key in another region is refused at `key create`, at
//! `init`, at `rotate rewrap --to` and, named in a wrapped-key record, before any unwrap; the
//! policy is signed by the owner, so the custodian can neither edit nor remove it.

use crate::common::services::{available, Moto};
use crate::common::*;

const US_ONLY: &str = r#"{"format": 1, "services": ["awskms"],
  "awskms": {"regions": ["us-east-1", "us-west-2", "us-gov-west-1"]}}"#;

fn env_in(moto: &Moto, region: &str) -> Vec<(&'static str, String)> {
    let mut env = moto.env();
    env.retain(|(k, _)| *k != "AWS_REGION");
    env.push(("AWS_REGION", region.to_string()));
    env
}

fn create_in(sb: &Sandbox, moto: &Moto, region: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--json", "key", "create", "--key-service", "awskms:new"];
    args.extend_from_slice(extra);
    sb.run_env(&env_in(moto, region), &args)
}

#[test]
fn keys_outside_the_policy_are_refused_everywhere() {
    if !available("moto_server") {
        return;
    }
    let moto = Moto::start(false);
    let sb = Sandbox::new();
    let policy = sb.path("policy.json");
    std::fs::write(&policy, US_ONLY).unwrap();
    let p = policy.to_str().unwrap();

    // key create: in eu-west-1 refused before anything is made.
    let r = create_in(&sb, &moto, "eu-west-1", &["--key-policy", p]).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("region eu-west-1") && r.stderr.contains("us-gov-west-1"),
        "{}",
        r.stderr
    );
    let us = create_in(&sb, &moto, "us-east-1", &["--key-policy", p])
        .ok()
        .json()["key_service"]
        .as_str()
        .unwrap()
        .to_string();
    let eu = create_in(&sb, &moto, "eu-west-1", &[]).ok().json()["key_service"]
        .as_str()
        .unwrap()
        .to_string();
    let run = |ks: &str, args: &[&str]| {
        let mut a = vec!["--key-service", ks];
        a.extend_from_slice(args);
        sb.run_env(&moto.env(), &a)
    };

    // init: the eu-west-1 key is refused, nothing is made.
    let r = run(&eu, &["init", "--key-policy", p]).code(EXIT_KEY_SERVICE);
    assert!(
        r.stderr.contains("eu-west-1") && r.stderr.contains("key policy"),
        "{}",
        r.stderr
    );
    assert!(!sb.repo().join("config").exists());
    run(&us, &["init", "--key-policy", p]).ok();
    let shown = run(&us, &["--json", "key", "policy", "show"]).ok().json();
    assert_eq!(
        shown["policy"]["awskms"]["regions"][2], "us-gov-west-1",
        "{shown}"
    );

    let src = sb.path("src");
    write(&src.join("a.txt"), b"stays in the US");
    run(&us, &["backup", src.to_str().unwrap()]).ok();

    // rotate rewrap --to the eu-west-1 key: refused, no record changes.
    let keys_before: Vec<Vec<u8>> = list_ids(&sb.repo().join("keys"))
        .iter()
        .map(|n| std::fs::read(sb.repo().join("keys").join(n)).unwrap())
        .collect();
    let r = run(&us, &["rotate", "rewrap", "--to", &eu]).code(EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("region eu-west-1"), "{}", r.stderr);
    let keys_after: Vec<Vec<u8>> = list_ids(&sb.repo().join("keys"))
        .iter()
        .map(|n| std::fs::read(sb.repo().join("keys").join(n)).unwrap())
        .collect();
    assert_eq!(keys_before, keys_after);

    // A wrapped-key record naming a key in eu-west-1 (the custodian edits it): refused
    // before any unwrap, naming the rule.
    let name = list_ids(&sb.repo().join("keys")).remove(0);
    let path = sb.repo().join("keys").join(&name);
    let genuine = std::fs::read(&path).unwrap();
    let mut rec: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
    let eu_arn = eu
        .trim_start_matches("awskms:")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    rec["kek"] = format!("awskms:{eu_arn}").into();
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let out = sb.path("out");
    let r = run(
        &us,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    );
    assert_eq!(r.code, EXIT_KEY_SERVICE, "{}", r.stderr);
    assert!(
        r.stderr.contains("key policy") && r.stderr.contains("region eu-west-1"),
        "{}",
        r.stderr
    );
    std::fs::write(&path, &genuine).unwrap();
    run(
        &us,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .ok();
    assert_same_tree(&src, &restored(&out, &src));

    // The custodian can neither loosen the policy nor remove it.
    let stored = sb.repo().join("policy");
    let genuine = std::fs::read(&stored).unwrap();
    let loosened = String::from_utf8(genuine.clone())
        .unwrap()
        .replace("us-west-2", "eu-west-1");
    std::fs::write(&stored, loosened).unwrap();
    let r = run(&us, &["snapshots"]).code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("policy"), "{}", r.stderr);
    std::fs::remove_file(&stored).unwrap();
    let r = run(&us, &["snapshots"]).code(EXIT_INTEGRITY);
    assert!(
        r.stderr.contains("policy") && r.stderr.contains("deleted"),
        "{}",
        r.stderr
    );
    std::fs::write(&stored, &genuine).unwrap();
    run(&us, &["snapshots"]).ok();

    // Nor put back an older policy, genuine and signed, over a newer one.
    let tighter = sb.path("tighter.json");
    std::fs::write(
        &tighter,
        r#"{"format": 1, "services": ["awskms"], "awskms": {"regions": ["us-east-1"]}}"#,
    )
    .unwrap();
    run(&us, &["key", "policy", "set", tighter.to_str().unwrap()]).ok();
    std::fs::write(&stored, &genuine).unwrap();
    let r = run(&us, &["snapshots"]).code(EXIT_INTEGRITY);
    assert!(r.stderr.contains("older key policy"), "{}", r.stderr);
}
