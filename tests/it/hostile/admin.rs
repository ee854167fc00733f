//! Objects the administrator's commands trust for coordination and ageing: locks, and the
//! plaintext `created` of wrapped-key records.

use super::*;
use custody::format::garbage::LockRecord;
use custody::repo::reencrypt::ReencryptReport;
use custody::repo::rewrap::RewrapReport;
use custody::LockId;

fn forged_lock(e: &Estate, f: &mut Findings) {
    let now = Utc::now();
    let lock = LockRecord {
        format: 1,
        operation: "prune".into(),
        host: "backup-host".into(),
        pid: 4242,
        started: now - chrono::Duration::days(365),
        refreshed: now + chrono::Duration::days(36_500),
    };
    e.w.save_object(&LockId::random().unwrap(), &lock).unwrap();
    owner_routine(e, &[POLICY], false, &[EXIT_OK], f);
    restores(e, &e.kept(), "after", f);
}

/// Attack 7: the writer seals a lock (it holds the index key) that started a year ago and is
/// "refreshed" a century from now, so it never looks stale. Expected: the owner's prunes run
/// (exit 0), the forged lock ignored or reported, and every kept snapshot restores.
#[test]
fn a_forged_lock_does_not_block_prune() {
    on_both(forged_lock);
}

fn edited_key_age(e: &Estate, f: &mut Findings, ahead: chrono::Duration, resign: bool) {
    let store = e.w.store();
    // The plaintext envelope header of beta's newest snapshot names its session.
    let sealed = store.get(FileKind::Snapshot, &e.genuine[3].id).unwrap();
    let header = custody::crypto::envelope::parse_header(&sealed).unwrap();
    let session = SessionId(header.key_id);
    let record = store.get(FileKind::Key, &session).unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    record["created"] = (Utc::now() + ahead).to_rfc3339().into();
    if resign {
        // Signed again with the attacker's own enrolled identity: the signature verifies and
        // the signer is enrolled, but it did not start this session.
        let mut rec: custody::format::wrapped::WrappedKeyRecord =
            serde_json::from_value(record.clone()).unwrap();
        let path = custody::identity::WriterIdentity::path_in(&e.r.sb.path("writer-keyring"));
        let me = custody::identity::WriterIdentity::open(&path, None).unwrap();
        rec.sign(&me.key);
        record = serde_json::to_value(&rec).unwrap();
    }
    let edited = serde_json::to_vec_pretty(&record).unwrap();
    store.put(FileKind::Key, &session, edited.into()).unwrap();
    // Every record is really more than a second old after this.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let before = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let new = format!("local:{}", e.r.sb.path("keyring-2").display());
    e.r.run(&["--key-service", &new, "key", "create"]).ok();
    let rewrap = [
        "rotate",
        "rewrap",
        "--to",
        &new,
        "--older-than",
        "1s",
        "--dry-run",
    ];
    let run = e.r.run(&[&["--json"][..], &rewrap].concat());
    let rewrap: Option<RewrapReport> = serde_json::from_slice(&run.stdout).ok();
    f.expect(rewrap.as_ref().is_some_and(|r| r.too_new == 0), || {
        format!(
            "rotate rewrap --older-than 1s exited {} and skipped a record as too new: {rewrap:?} {}",
            run.code,
            brief(&run.stderr)
        )
    });
    let reencrypt = ["--json", "rotate", "reencrypt", "--before", &before];
    let run = e.r.run(&reencrypt);
    let reencrypt: Option<ReencryptReport> = serde_json::from_slice(&run.stdout).ok();
    let chosen = reencrypt.as_ref().map(|r| r.sessions.clone());
    f.expect(chosen.as_ref().is_some_and(|c| c.contains(&session)), || {
        format!(
            "rotate reencrypt --before {before} exited {} and left session {} (created {}): chose {chosen:?} {}",
            run.code,
            session.short(),
            record["created"],
            brief(&run.stderr)
        )
    });
    owner_routine(e, &[POLICY], false, &[EXIT_OK, EXIT_INTEGRITY], f);
    restores(e, &e.kept(), "after", f);
}

/// Attack 8: the writer edits the plaintext `created` of the key record of beta's newest
/// snapshot's session to a year from now. Expected: `rotate rewrap --older-than 1s` and
/// `rotate reencrypt --before <now>` still take that session by its real age (it is seconds
/// old, not in the future), and every kept snapshot restores after the routine.
#[test]
fn an_edited_key_age_does_not_hide_a_session_from_rotation() {
    on_both(|e, f| edited_key_age(e, f, chrono::Duration::days(365), false));
}

/// Attack 8, variant: `created` moved only 30 minutes ahead, within the clock-skew allowance,
/// so that it looks like a session just started. Expected as above: the record's signature no
/// longer verifies (it covers `created`, docs/FORMAT.md §17.4), so the session counts as old.
#[test]
fn a_plausibly_edited_key_age_does_not_hide_a_session_from_rotation() {
    on_both(|e, f| edited_key_age(e, f, chrono::Duration::minutes(30), false));
}

/// Attack 8, variant: as above, and the record signed again with the attacker's own enrolled
/// identity. Expected as above: a writer's session is dated by the manifests sealed under its
/// own key, which the attacker cannot make, not by a record any enrolled writer can sign.
#[test]
fn a_re_signed_key_age_does_not_hide_a_session_from_rotation() {
    on_both(|e, f| edited_key_age(e, f, chrono::Duration::minutes(30), true));
}
