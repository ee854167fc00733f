//! Rotation by rewrap: every wrapped key (the repository secret in `config`, every session key
//! in `keys/`) re-wrapped under the KEKs of another key service. Cost grows with the number of
//! sessions, not with data. No data is read and no repository key is derived: the rotator needs
//! only the two key services (within one KMS, ReEncrypt: it never sees a plaintext key).
//!
//! Crash safety and resumption: each record is replaced by one atomic put, records already
//! under the destination's KEKs are skipped, so a rerun after kill -9 finishes the job. A
//! record is only ever replaced by one that the destination produced from it and, unless
//! `--no-verify`, has unwrapped again before the put: the old copy is never lost to a
//! destination that cannot read what it wrote (a writer keyring, a wrong key).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::config::Config;
use crate::format::wrapped::{Purpose, WrappedKey, WrappedKeyRecord};
use crate::id::{Id, SessionId};
use crate::keyservice::KeyService;
use crate::store::{FileKind, Store};

#[derive(Debug, Clone, Default)]
pub struct RewrapOptions {
    pub dry_run: bool,
    /// Only records created before this time (`--older-than`).
    pub created_before: Option<DateTime<Utc>>,
    /// Unwrap each new record with the destination before it replaces the old one.
    pub verify: bool,
    /// Each session's authenticated age, when the rotator is a key holder who could work it
    /// out ([`crate::repo::Repository::authenticated_session_ages`]): it replaces the record's
    /// `created`. `None`: the record's `created`, if a valid signature covers it (a rotator
    /// that cannot open the repository).
    pub session_ages: Option<crate::repo::reencrypt::SessionAges>,
}

/// `rotate rewrap --json`.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct RewrapReport {
    /// Records rewrapped by this run (or that would be, with `--dry-run`).
    pub rewrapped: u64,
    /// Records already under the destination's KEKs (done by an earlier, interrupted run).
    pub already_done: u64,
    /// Records newer than `--older-than`, left as they are.
    pub too_new: u64,
    pub verified: u64,
    /// Records replaced without verification (`--no-verify`).
    pub unverified: u64,
    pub dry_run: bool,
    /// The owner's signing key was sealed under the destination's owner anchor.
    #[serde(default)]
    pub owner_resealed: bool,
    /// The destination key service.
    pub to: String,
}

impl std::fmt::Display for RewrapReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} key(s) under {}; {} already there, {} newer than --older-than{}",
            if self.dry_run {
                "would rewrap"
            } else {
                "rewrapped"
            },
            self.rewrapped,
            self.to,
            self.already_done,
            self.too_new,
            if self.unverified > 0 {
                format!("; {} not verified (the destination refused to unwrap: verify with `custody check` as a key holder)", self.unverified)
            } else {
                String::new()
            }
        )?;
        if !self.dry_run && self.rewrapped + self.already_done > 0 {
            write!(f, "\nuse --key-service {} from now on", self.to)?;
        }
        Ok(())
    }
}

/// The destination's KEK reference for each purpose.
async fn destination_keks(to: &dyn KeyService) -> Result<HashMap<Purpose, String>> {
    let mut out = HashMap::new();
    for k in to.describe().await? {
        for &purpose in k.purpose.wraps() {
            out.insert(purpose, k.reference.clone());
        }
    }
    if out.len() != 2 {
        return Err(Error::invalid(format!(
            "{} does not describe a meta and a data KEK",
            to.url()
        )));
    }
    Ok(out)
}

/// Before touching anything: the destination must unwrap what it wraps, for both purposes
/// (a writer keyring or a rotator without Decrypt would leave keys nobody can read).
async fn probe(to: &dyn KeyService, repo: &Id) -> Result<()> {
    for purpose in [Purpose::RepositorySecret, Purpose::SessionKey] {
        let key = crate::crypto::Key32::generate()?;
        let ctx = crate::format::wrapped::context(purpose, repo, &Id::random()?);
        let w = to.encrypt(purpose, &key, &ctx).await?;
        match to.decrypt(&w, &ctx).await {
            Ok(back) if back == key => {}
            Ok(_) => return Err(Error::integrity(to.url(), "probe key came back different")),
            Err(Error::KeyDenied { key, reason, .. }) => {
                return Err(Error::KeyDenied {
                    key,
                    operation: "verify rewrap".into(),
                    reason: format!(
                        "{reason}; the destination cannot unwrap what it wrapped, so nothing was changed (a rotator without Decrypt may pass --no-verify)"
                    ),
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn rewrap_one(
    from: &dyn KeyService,
    to: &dyn KeyService,
    rec: &WrappedKeyRecord,
) -> Result<WrappedKey> {
    let ctx = rec.context();
    if from.rewrap_within(to) {
        // Inside the service (KMS ReEncrypt): the plaintext key never reaches this process.
        // The source must be a key the old service was given, as for an unwrap.
        from.require_own(&rec.wrapped, "ReEncrypt").await?;
        to.rewrap(&rec.wrapped, rec.purpose, &ctx).await
    } else {
        let key = from.decrypt(&rec.wrapped, &ctx).await?;
        to.encrypt(rec.purpose, &key, &ctx).await
    }
}

/// Seals the owner's signing key (`owner`, docs/FORMAT.md §17.1) under the destination's
/// owner anchor, so that the key holders of the new service sign and verify as the same owner.
/// Done first: a destination that cannot make an owner anchor changes nothing. Returns whether
/// it was resealed (false: no `owner` record, or already under the destination).
async fn reseal_owner(
    store: &Arc<dyn Store>,
    repo: &Id,
    from: &dyn KeyService,
    to: &dyn KeyService,
    dry_run: bool,
) -> Result<bool> {
    use crate::format::provenance::OwnerRecord;
    let bytes = match store.get(FileKind::Owner, &Id::default()).await {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let rec: OwnerRecord = crate::format::from_json("owner record", &bytes)
        .map_err(|e| Error::integrity("owner", e))?;
    let (to_anchor, described) = match to.owner_anchor(repo).await {
        Ok(a) => a,
        // A rotator without the owner's key (KMS to KMS, no GenerateMac): the owner record is
        // left as it is. It still opens when the destination keeps the same owner key.
        Err(Error::KeyDenied { reason, .. }) => {
            tracing::warn!("the owner key was not resealed ({reason}); if the destination's owner key differs, run `rotate rewrap` again as a key holder");
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if rec.open(repo, &to_anchor).is_ok() {
        return Ok(false);
    }
    let (from_anchor, _) = from.owner_anchor(repo).await?;
    let key = rec.open(repo, &from_anchor)?;
    if dry_run {
        return Ok(true);
    }
    let new = OwnerRecord::seal(repo, &key, &to_anchor, &described)?;
    new.open(repo, &to_anchor)?;
    let json = serde_json::to_vec_pretty(&new).map_err(|e| Error::Internal(e.to_string()))?;
    store
        .put(FileKind::Owner, &Id::default(), Bytes::from(json))
        .await?;
    Ok(true)
}

pub async fn rewrap(
    store: &Arc<dyn Store>,
    config: &Config,
    from: &dyn KeyService,
    to: &dyn KeyService,
    opts: &RewrapOptions,
    mut progress: impl FnMut(&str),
) -> Result<RewrapReport> {
    let dest = destination_keks(to).await?;
    if opts.verify && !opts.dry_run {
        probe(to, &config.body.repository).await?;
    }
    let mut report = RewrapReport {
        dry_run: opts.dry_run,
        to: to.url(),
        ..Default::default()
    };
    let repo = config.body.repository;
    let signed = match store.get(FileKind::Owner, &Id::default()).await {
        Ok(_) => true,
        Err(Error::NotFound(_)) => false,
        Err(e) => return Err(e),
    };
    // The owner key follows the repository secret (config), sealed right after it moves:
    // a partial rotation (--older-than) that leaves the config under the old KEK leaves the
    // owner key under the old service too, so the old service still opens everything.
    let reseal = |dry_run: bool| reseal_owner(store, &repo, from, to, dry_run);
    // (object, record): the config's secret first, then every session key.
    let mut records: Vec<(Option<SessionId>, WrappedKeyRecord)> =
        vec![(None, config.secret.clone())];
    for (id, _) in store.list(FileKind::Key).await? {
        let b = store.get(FileKind::Key, &id).await?;
        let rec: WrappedKeyRecord = serde_json::from_slice(&b).map_err(|e| {
            Error::integrity(
                format!("keys/{id}"),
                format!("not a wrapped-key record: {e}"),
            )
        })?;
        if rec.key_id != id || rec.repository != repo {
            return Err(Error::integrity(
                format!("keys/{id}"),
                "record names another session or repository",
            ));
        }
        records.push((Some(SessionId(id)), rec));
    }
    let mut config = config.clone();
    for (id, rec) in records {
        let name = id.map_or("config".to_string(), |i| format!("keys/{i}"));
        if dest.get(&rec.purpose) == Some(&rec.wrapped.kek) {
            report.already_done += 1;
            // A rerun after an interruption between the config and the owner record.
            if id.is_none() && reseal(opts.dry_run).await? {
                report.owner_resealed = true;
                progress("resealed the owner key (owner)");
            }
            continue;
        }
        // A creation time in the future is no age at all (an edited record), nor, where
        // records are signed (docs/FORMAT.md §17.4), is one without a valid signature:
        // rewrapped. A key holder passes each session's authenticated age instead.
        let created = match (&opts.session_ages, id) {
            (Some(ages), Some(s)) => ages
                .get(&s)
                .copied()
                .flatten()
                .unwrap_or(DateTime::UNIX_EPOCH),
            _ => rec.created,
        };
        let believable = created <= Utc::now() + crate::repo::forget::CLOCK_SKEW
            && (!signed
                || rec.purpose != Purpose::SessionKey
                || opts.session_ages.is_some()
                || rec.signer().is_some());
        if opts.created_before.is_some_and(|t| created >= t) && believable {
            report.too_new += 1;
            continue;
        }
        report.rewrapped += 1;
        if opts.dry_run && id.is_none() && reseal(true).await? {
            report.owner_resealed = true;
        }
        if opts.dry_run {
            progress(&format!(
                "would rewrap {name} ({} -> {})",
                rec.wrapped.kek, dest[&rec.purpose]
            ));
            continue;
        }
        let wrapped = rewrap_one(from, to, &rec).await.map_err(|e| match e {
            Error::Integrity { reason, .. } => Error::integrity(&name, reason),
            e => e,
        })?;
        // Verify before replacing: the record being replaced is the only copy of this key.
        if opts.verify {
            match to.decrypt(&wrapped, &rec.context()).await {
                Ok(_) => report.verified += 1,
                Err(Error::KeyDenied { key, reason, .. }) => {
                    return Err(Error::KeyDenied {
                        key,
                        operation: "verify rewrap".into(),
                        reason: format!(
                            "{reason}; the destination cannot unwrap what it wrapped, so {name} was left as it was (a rotator without Decrypt may pass --no-verify)"
                        ),
                    })
                }
                Err(e) => return Err(e),
            }
        } else {
            report.unverified += 1;
        }
        let new = WrappedKeyRecord {
            wrapped,
            ..rec.clone()
        };
        match id {
            Some(id) => {
                let json = serde_json::to_vec_pretty(&new).expect("record serializes");
                store.put(FileKind::Key, &id, Bytes::from(json)).await?;
                crate::failpoint::hit("rewrap-after-record");
            }
            None => {
                // The body and its MAC are untouched: a rotator needs no repository secret.
                config.secret = new.clone();
                let json = serde_json::to_vec_pretty(&config).expect("config serializes");
                store
                    .put(FileKind::Config, &Id::default(), Bytes::from(json))
                    .await?;
                crate::failpoint::hit("rewrap-after-config");
                if reseal(false).await? {
                    report.owner_resealed = true;
                    progress("resealed the owner key (owner)");
                }
            }
        }
        tracing::info!(object = %name, kek = %new.wrapped.kek, "rewrapped");
        progress(&format!("rewrapped {name}"));
    }
    Ok(report)
}

/// Parses `90d`, `12h`, `30m`, `45s`, `2w`, `1y` (a year is 365 days).
pub fn parse_duration(s: &str) -> Result<chrono::Duration> {
    let bad = || {
        Error::invalid(format!(
            "duration {s:?}: expected a number and one of s, m, h, d, w, y (e.g. 90d)"
        ))
    };
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d").unwrap().num_days(), 90);
        assert_eq!(parse_duration("12h").unwrap().num_hours(), 12);
        assert_eq!(parse_duration("1y").unwrap().num_days(), 365);
        for bad in ["", "d", "10", "5x", "-3d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
