//! The key-policy templates in keys/ are valid JSON and grant what README says each role gets.

use serde_json::Value;

fn load(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("keys/aws")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn statements(v: &Value) -> Vec<&Value> {
    v["Statement"].as_array().unwrap().iter().collect()
}

fn actions(s: &Value) -> Vec<String> {
    match &s["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        _ => vec![],
    }
}

fn allowed(v: &Value, action: &str, resource_part: &str) -> bool {
    statements(v).iter().any(|s| {
        s["Effect"] == "Allow"
            && actions(s).iter().any(|a| a == action || a == "kms:*")
            && s["Resource"].to_string().contains(resource_part)
    })
}

fn denied(v: &Value, action: &str, resource_part: &str) -> bool {
    statements(v).iter().any(|s| {
        s["Effect"] == "Deny"
            && actions(s).iter().any(|a| {
                a == action || (a.ends_with('*') && action.starts_with(a.trim_end_matches('*')))
            })
            && (s["Resource"] == "*" || s["Resource"].to_string().contains(resource_part))
    })
}

#[test]
fn every_template_is_valid_json_with_a_version() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/aws");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        // The lifecycle rule is a bucket configuration, not a policy.
        if name == "s3-lifecycle.json" {
            let l = load(&name);
            assert!(l["Rules"][0]["NoncurrentVersionExpiration"]["NoncurrentDays"].is_u64());
            continue;
        }
        if name.ends_with(".json") {
            assert_eq!(load(&name)["Version"], "2012-10-17", "{name}");
            n += 1;
        }
    }
    assert_eq!(n, 8);
}

/// Object Lock (README "Immutable backups"): jobs add objects with retention and delete
/// nothing; key holders add delete markers only; only the break-glass role bypasses
/// governance retention, and the bucket policy denies it to everyone else.
#[test]
fn s3_locked_bucket_roles() {
    let w = load("s3-writer-iam-policy.json");
    assert!(allowed(&w, "s3:PutObject", "BUCKET/PREFIX"));
    assert!(allowed(&w, "s3:PutObjectRetention", "BUCKET/PREFIX"));
    for a in [
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:BypassGovernanceRetention",
    ] {
        assert!(!allowed(&w, a, "BUCKET") && denied(&w, a, "BUCKET"), "{a}");
    }
    let k = load("s3-keyholder-iam-policy.json");
    assert!(allowed(&k, "s3:DeleteObject", "BUCKET/PREFIX"));
    assert!(allowed(&k, "s3:ListBucketVersions", "BUCKET"));
    assert!(allowed(&k, "s3:GetObjectVersion", "BUCKET/PREFIX"));
    for a in ["s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"] {
        assert!(denied(&k, a, "BUCKET"), "{a}");
    }
    let g = load("s3-break-glass-iam-policy.json");
    assert!(allowed(&g, "s3:BypassGovernanceRetention", "BUCKET"));
    let b = load("s3-locked-bucket-policy.json");
    let bypass = statements(&b)
        .into_iter()
        .find(|s| {
            actions(s)
                .iter()
                .any(|a| a == "s3:BypassGovernanceRetention")
        })
        .unwrap();
    assert_eq!(bypass["Effect"], "Deny");
    assert!(bypass["Condition"]
        .to_string()
        .contains("custody-break-glass"));
}

#[test]
fn writer_adds_but_cannot_read() {
    let w = load("writer-iam-policy.json");
    assert!(allowed(&w, "kms:GenerateDataKey", "DATA-KEY-ID"));
    assert!(allowed(&w, "kms:Decrypt", "META-KEY-ID"));
    assert!(!allowed(&w, "kms:Decrypt", "DATA-KEY-ID"));
    assert!(denied(&w, "kms:Decrypt", "DATA-KEY-ID"));
    assert!(denied(&w, "kms:ReEncryptFrom", "DATA-KEY-ID"));
    // The owner key (docs/FORMAT.md §17.1) is the key holders' alone.
    assert!(!allowed(&w, "kms:GenerateMac", "OWNER-KEY-ID"));
    assert!(denied(&w, "kms:GenerateMac", "OWNER-KEY-ID"));
}

#[test]
fn reader_and_rotator() {
    let r = load("reader-iam-policy.json");
    assert!(allowed(&r, "kms:Decrypt", "DATA-KEY-ID") && allowed(&r, "kms:Decrypt", "META-KEY-ID"));
    let rot = load("rotator-iam-policy.json");
    assert!(
        allowed(&rot, "kms:ReEncryptFrom", "DATA-KEY-ID")
            && allowed(&rot, "kms:ReEncryptTo", "NEW-KEY-ID")
    );
    assert!(denied(&rot, "kms:Decrypt", "DATA-KEY-ID"));
    assert!(denied(&rot, "kms:GenerateDataKey", "DATA-KEY-ID"));
    assert!(allowed(&rot, "kms:Encrypt", "NEW-KEY-ID"));
    assert!(allowed(&r, "kms:GenerateDataKey", "META-KEY-ID"));
    assert!(allowed(&r, "kms:GenerateMac", "OWNER-KEY-ID"));
    assert!(!allowed(&rot, "kms:GenerateMac", "OWNER-KEY-ID"));
}

#[test]
fn key_policy_keeps_writers_from_session_keys() {
    let k = load("key-policy.json");
    let guard = statements(&k)
        .into_iter()
        .find(|s| s["Effect"] == "Deny" && s["Principal"].to_string().contains("custody-writer"))
        .expect("a deny for the writer role");
    assert!(actions(guard).contains(&"kms:Decrypt".to_string()));
    assert_eq!(
        guard["Condition"]["StringEquals"]["kms:EncryptionContext:custody:purpose"],
        "session-key"
    );
}
