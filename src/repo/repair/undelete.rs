//! `repair undelete --before TIME` (docs/FORMAT.md §21): after someone deleted or overwrote
//! objects in a versioned bucket (delete markers, new versions), make each object current
//! again as it was before TIME, by copying that version over it. Nothing is deleted: objects
//! made after TIME are left as they are (the checks of their signatures and the history
//! judge them), and the versions replaced stay in the bucket's history.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::blocking::block_on;
use crate::error::{Error, Result};
use crate::store::object_lock::{LockSettings, ObjectVersion};
use crate::store::Store;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UndeleteReport {
    pub dry_run: bool,
    pub before: Option<DateTime<Utc>>,
    /// Objects made current again: path, and whether it had been deleted (else overwritten).
    pub restored: Vec<Restored>,
    /// Objects first written after TIME, left as they are.
    pub newer_left: usize,
    /// Objects overwritten since TIME left as they are (`--deleted-only`).
    #[serde(default)]
    pub left_overwritten: usize,
}

/// Whether `path` is one of the names custody gives objects (docs/FORMAT.md §1).
fn is_repository_object(path: &str) -> bool {
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["config" | "owner" | "policy" | "retention"] => true,
        ["data", xx, id] => xx.len() == 2 && hex(id) && id.starts_with(xx),
        [dir, id] => {
            hex(id)
                && crate::store::FileKind::ALL.iter().any(|k| {
                    !k.dir().is_empty() && k.dir() == *dir && *k != crate::store::FileKind::Pack
                })
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restored {
    pub object: String,
    pub version: String,
    pub was: String,
}

impl fmt::Display for UndeleteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.restored {
            let kind = r.object.split('/').next().unwrap_or("");
            *by_kind.entry(kind).or_default() += 1;
        }
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
        write!(
            f,
            "{} object(s) {} as they were before {}{}; {} object(s) written after it left as \
             they are",
            self.restored.len(),
            if self.dry_run {
                "would be restored"
            } else {
                "restored"
            },
            self.before
                .map(crate::human::local_time)
                .unwrap_or_default(),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            self.newer_left
        )?;
        if self.left_overwritten > 0 {
            write!(
                f,
                "; {} overwritten object(s) left as they are (--deleted-only)",
                self.left_overwritten
            )?;
        }
        if self.restored.iter().any(|r| {
            r.was == "overwritten"
                && matches!(
                    r.object.split('/').next(),
                    Some("config" | "owner" | "keys" | "policy" | "retention" | "reach")
                )
        }) {
            write!(
                f,
                "\nnote: records that key rotation and policy or retention changes rewrite were \
                 put back as they were; redo any such change made after that time"
            )?;
        }
        if self.dry_run {
            for r in &self.restored {
                write!(f, "\n  {} ({})", r.object, r.was)?;
            }
        }
        Ok(())
    }
}

/// What to do with one object's versions, newest last: the version to make current again.
fn plan_one<'a>(
    versions: &[&'a ObjectVersion],
    before: DateTime<Utc>,
) -> Option<(&'a ObjectVersion, &'static str)> {
    let then = versions.iter().rev().find(|v| v.modified < before)?;
    if then.delete_marker {
        return None;
    }
    let now = versions.iter().find(|v| v.latest).or(versions.last())?;
    // Unchanged, or already put back (the same bytes again: a rerun has nothing to do).
    if now.version == then.version
        || (!now.delete_marker && now.etag.is_some() && now.etag == then.etag)
    {
        return None;
    }
    Some((
        then,
        if now.delete_marker {
            "deleted"
        } else {
            "overwritten"
        },
    ))
}

/// Every object's state before `before`, made current again where it differs. Works on the
/// store alone, without opening the repository: the config itself may be what was deleted.
pub fn undelete(
    rt: &tokio::runtime::Handle,
    store: &dyn Store,
    before: DateTime<Utc>,
    deleted_only: bool,
    dry_run: bool,
) -> Result<UndeleteReport> {
    let lock = store.object_lock().ok_or_else(|| {
        Error::invalid(format!(
            "{} keeps no object versions: undelete needs a versioned S3 bucket",
            store.location()
        ))
    })?;
    // The repository's own record may be among what was deleted: what is put back gets the
    // bucket's default retention, asked for explicitly (and so with the checksum S3 wants).
    if lock.settings().is_none() {
        if let Some((mode, days)) = block_on(rt, lock.bucket_lock())?.default {
            lock.configure(Some(LockSettings {
                mode,
                days,
                conditional_writes: false,
            }));
        }
    }
    let all = block_on(rt, lock.versions())?;
    let mut by_path: BTreeMap<&str, Vec<&ObjectVersion>> = BTreeMap::new();
    for v in &all {
        // Only the repository's own objects (a repository at a bucket's root shares the
        // listing with whatever else is there); a lock put back would stop prune for half an
        // hour for nothing.
        if !is_repository_object(&v.path) || v.path.starts_with("locks/") {
            continue;
        }
        by_path.entry(v.path.as_str()).or_default().push(v);
    }
    for versions in by_path.values_mut() {
        // Oldest first; within one second (S3's resolution), the current one last.
        versions.sort_by_key(|v| (v.modified, v.latest));
    }
    let mut report = UndeleteReport {
        dry_run,
        before: Some(before),
        ..UndeleteReport::default()
    };
    for (path, versions) in by_path {
        if versions.iter().all(|v| v.modified >= before) {
            report.newer_left += 1;
            continue;
        }
        let Some((then, was)) = plan_one(&versions, before) else {
            continue;
        };
        if deleted_only && was != "deleted" {
            report.left_overwritten += 1;
            continue;
        }
        if !dry_run {
            block_on(rt, lock.restore_version(path, &then.version))?;
        }
        report.restored.push(Restored {
            object: path.to_string(),
            version: then.version.clone(),
            was: was.to_string(),
        });
    }
    tracing::info!(restored = report.restored.len(), "undelete");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: &str, secs: i64, marker: bool, latest: bool) -> ObjectVersion {
        ObjectVersion {
            path: "snapshots/x".into(),
            version: version.into(),
            modified: DateTime::from_timestamp(secs, 0).unwrap(),
            delete_marker: marker,
            latest,
            etag: (!marker).then(|| format!("\"{version}\"")),
        }
    }

    #[test]
    fn only_repository_objects() {
        let id = "ab".repeat(32);
        assert!(is_repository_object("config"));
        assert!(is_repository_object(&format!("snapshots/{id}")));
        assert!(is_repository_object(&format!("data/ab/{id}")));
        assert!(!is_repository_object(&format!("data/cd/{id}")));
        assert!(!is_repository_object(&format!("other-app/{id}")));
        assert!(!is_repository_object("probe-if-none-match"));
        assert!(!is_repository_object("photos/cat.jpg"));
    }

    #[test]
    fn plans_the_version_current_before_the_time() {
        let t = DateTime::from_timestamp(100, 0).unwrap();
        let (a, m) = (v("a", 50, false, false), v("m", 150, true, true));
        let (then, was) = plan_one(&[&a, &m], t).unwrap();
        assert_eq!((then.version.as_str(), was), ("a", "deleted"));
        let b = v("b", 160, false, true);
        let a2 = v("a", 50, false, false);
        assert_eq!(plan_one(&[&a2, &b], t).unwrap().1, "overwritten");
        // Unchanged since, made after, or deleted before: nothing to do.
        let a3 = v("a", 50, false, true);
        assert!(plan_one(&[&a3], t).is_none());
        let late = v("c", 150, false, true);
        assert!(plan_one(&[&late], t).is_none());
        let (d, m2) = (v("d", 10, false, false), v("m", 20, true, true));
        assert!(plan_one(&[&d, &m2], t).is_none());
        // Put back already: a later version with the same content.
        let (a4, mut back) = (v("a", 50, false, false), v("b", 170, false, true));
        back.etag = a4.etag.clone();
        assert!(plan_one(&[&a4, &back], t).is_none());
    }
}
