//! Retention: which snapshots a keep policy keeps, and why (the rules of restic's `forget`).
//! Pure: the policy is applied to a list of snapshots; `forget` deletes the rest.
//!
//! Within each group (by default: same host and same paths), snapshots are taken newest
//! first. `--keep-last N` keeps the N newest. `--keep-hourly/daily/weekly/monthly/yearly N`
//! keep the newest snapshot of each of the N most recent hours, days, ISO weeks, months or
//! years that have a snapshot (in the time zone given, local time on the command line).
//! `--keep-within D` keeps every snapshot less than D older than the group's newest, and
//! `--keep-tag T` every snapshot with tag T. A snapshot is kept when any rule keeps it.
//!
//! A snapshot dated after the policy's `not_after` (now plus a clock-skew allowance) is kept,
//! reported, and not counted: a writer can date a manifest as it likes, and forgeries dated
//! in the future would otherwise fill every keep slot and move the reference point of
//! `--keep-within`, so that the policy deletes the genuine history.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};

use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<chrono::Duration>,
    pub tags: Vec<String>,
    /// Snapshots dated after this are kept and not counted (see the module's doc).
    pub not_after: Option<DateTime<Utc>>,
}

/// How far in the future a snapshot may be dated before `forget`, `snapshots` and `check`
/// treat it as future-dated: backup hosts' clocks may run somewhat ahead.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::hours(1);

/// Why a future-dated snapshot is kept (shown by `forget`).
pub const FUTURE_DATED: &str =
    "dated in the future beyond the clock-skew allowance: kept, not counted by the policy";

impl KeepPolicy {
    /// A policy that keeps nothing would delete every snapshot: refused by the command.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// Which fields put snapshots into the same group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl GroupBy {
    /// Parses `host,paths` (the default), `host`, `paths,tags`, `` (one group)...
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(format!(
                        "unknown group-by field {other:?} (host, paths, tags)"
                    ))
                }
            }
        }
        Ok(g)
    }

    pub fn key(&self, s: &Snapshot) -> GroupKey {
        let mut paths = s.paths.clone();
        paths.sort();
        let mut tags = s.tags.clone();
        tags.sort();
        GroupKey {
            writer: s.writer,
            host: self.host.then(|| s.host.clone()),
            paths: self.paths.then_some(paths),
            tags: self.tags.then_some(tags),
        }
    }
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct GroupKey {
    /// The writer that made the snapshots (docs/FORMAT.md §17): always part of the group, so
    /// that one writer's snapshots, whatever host they claim, never count against another's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<crate::id::SignerId>,
    pub host: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: SnapshotId,
    pub keep: bool,
    /// Why it is kept (`last snapshot`, `daily snapshot`...); empty when removed.
    pub reasons: Vec<String>,
}

/// Applies `policy` to one group. `snaps` may come in any order; decisions come newest first.
pub fn apply<Tz: TimeZone>(
    policy: &KeepPolicy,
    snaps: &[(SnapshotId, DateTime<Utc>, Vec<String>)],
    tz: &Tz,
) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..snaps.len()).collect();
    order.sort_by(|&a, &b| {
        snaps[b]
            .1
            .cmp(&snaps[a].1)
            .then(snaps[b].0.cmp(&snaps[a].0))
    });
    let future = |i: &usize| policy.not_after.is_some_and(|t| snaps[*i].1 > t);
    let mut out = Vec::with_capacity(snaps.len());
    for &i in order.iter().filter(|i| future(i)) {
        out.push(Decision {
            id: snaps[i].0,
            keep: true,
            reasons: vec![FUTURE_DATED.to_string()],
        });
    }
    order.retain(|i| !future(i));
    let newest = order.first().map(|&i| snaps[i].1);
    type Bucket = fn(&DateTime<chrono::FixedOffset>) -> (i32, u32, u32, u32);
    let buckets: [(&str, u32, Bucket); 5] = [
        ("hourly", policy.hourly, |t| {
            (t.year(), t.month(), t.day(), t.hour())
        }),
        ("daily", policy.daily, |t| (t.year(), t.month(), t.day(), 0)),
        ("weekly", policy.weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }),
        ("monthly", policy.monthly, |t| (t.year(), t.month(), 0, 0)),
        ("yearly", policy.yearly, |t| (t.year(), 0, 0, 0)),
    ];
    let mut counts = [0u32; 5];
    let mut last_bucket: [Option<(i32, u32, u32, u32)>; 5] = [None; 5];
    for (n, &i) in order.iter().enumerate() {
        let (id, time, tags) = &snaps[i];
        let local = time.with_timezone(tz).fixed_offset();
        let mut reasons = Vec::new();
        if (n as u32) < policy.last {
            reasons.push("last snapshot".to_string());
        }
        for (k, (name, limit, bucket)) in buckets.iter().enumerate() {
            let b = bucket(&local);
            if counts[k] < *limit && last_bucket[k] != Some(b) {
                counts[k] += 1;
                last_bucket[k] = Some(b);
                reasons.push(format!("{name} snapshot"));
            }
        }
        if let (Some(d), Some(newest)) = (policy.within, newest) {
            if *time > newest - d {
                reasons.push("within the keep-within period".to_string());
            }
        }
        for t in policy.tags.iter().filter(|t| tags.contains(t)) {
            reasons.push(format!("tagged {t}"));
        }
        out.push(Decision {
            id: *id,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

/// One snapshot in `forget`'s report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForgetEntry {
    pub id: SnapshotId,
    pub time: Option<DateTime<Utc>>,
    /// Why it is kept; empty for a removed one.
    pub reasons: Vec<String>,
    /// Its place in the group's verdicts (newest first for a policy, the order given for
    /// ids): the text lists keep and remove lines in this order.
    #[serde(skip)]
    pub rank: usize,
}

/// One group's verdicts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForgetGroup {
    pub group: GroupKey,
    /// The writer's enrolled name (`owner` for the owner's own snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_name: Option<String>,
    pub keep: Vec<ForgetEntry>,
    pub remove: Vec<ForgetEntry>,
}

/// `forget --json`: every group with what was kept and why, what was removed, and the prune
/// that followed with `--prune`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ForgetOutput {
    pub dry_run: bool,
    pub groups: Vec<ForgetGroup>,
    pub removed: usize,
    pub prune: Option<crate::repo::prune::PruneReport>,
}

impl std::fmt::Display for ForgetOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let local = |e: &ForgetEntry| e.time.map(crate::human::local_time).unwrap_or_default();
        for g in &self.groups {
            let k = &g.group;
            let mut label = Vec::new();
            if let Some(w) = &k.writer {
                let name = g.writer_name.clone().unwrap_or_else(|| w.short());
                label.push(format!("writer {name}"));
            }
            // Host, paths and tags come from manifests: escaped for the terminal.
            use crate::human::escape;
            if let Some(h) = &k.host {
                label.push(format!("host {}", escape(h)));
            }
            if let Some(p) = &k.paths {
                label.push(format!("paths {}", escape(&p.join(" "))));
            }
            if let Some(t) = &k.tags {
                label.push(format!("tags {}", escape(&t.join(","))));
            }
            writeln!(
                f,
                "{}: keep {}, remove {}",
                if label.is_empty() {
                    "snapshots".into()
                } else {
                    label.join(", ")
                },
                g.keep.len(),
                g.remove.len()
            )?;
            let mut all: Vec<(&ForgetEntry, bool)> = g
                .keep
                .iter()
                .map(|e| (e, true))
                .chain(g.remove.iter().map(|e| (e, false)))
                .collect();
            all.sort_by_key(|(e, _)| e.rank);
            for (e, keep) in all {
                if keep {
                    writeln!(
                        f,
                        "  keep   {} {}  {}",
                        e.id.short(),
                        local(e),
                        e.reasons.join(", ")
                    )?;
                } else {
                    writeln!(f, "  remove {} {}", e.id.short(), local(e))?;
                }
            }
        }
        write!(
            f,
            "{} {} snapshot(s)",
            if self.dry_run {
                "would remove"
            } else {
                "removed"
            },
            self.removed
        )?;
        if let Some(p) = &self.prune {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn list(times: &[&str]) -> Vec<(SnapshotId, DateTime<Utc>, Vec<String>)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (SnapshotId(crate::Id([i as u8 + 1; 32])), at(t), vec![]))
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<u8> {
        let mut v: Vec<u8> = d
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.as_bytes()[0])
            .collect();
        v.sort();
        v
    }

    /// Forgeries dated in the future neither fill keep slots nor move `--keep-within`'s
    /// reference point; they are kept and say why.
    #[test]
    fn future_dated_snapshots_are_kept_and_not_counted() {
        let s = list(&[
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2027-06-01T00:00:00Z",
            "2027-07-01T00:00:00Z",
        ]);
        let p = KeepPolicy {
            last: 1,
            monthly: 1,
            within: Some(chrono::Duration::days(2)),
            not_after: Some(at("2026-01-02T01:00:00Z")),
            ..Default::default()
        };
        let d = apply(&p, &s, &Utc);
        assert_eq!(kept(&d), vec![1, 2, 3, 4]);
        assert_eq!(d[0].reasons, vec![FUTURE_DATED]);
        assert_eq!(d[1].reasons, vec![FUTURE_DATED]);
        let newest = d.iter().find(|d| d.id.as_bytes()[0] == 2).unwrap();
        assert!(newest.reasons.contains(&"last snapshot".to_string()));
        let older = d.iter().find(|d| d.id.as_bytes()[0] == 1).unwrap();
        assert_eq!(older.reasons, vec!["within the keep-within period"]);
        // Without the limit the forgeries take the slots and the genuine ones go.
        let unguarded = KeepPolicy {
            not_after: None,
            within: None,
            ..p
        };
        assert_eq!(kept(&apply(&unguarded, &s, &Utc)), vec![4]);
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let s = list(&[
            "2026-01-01T00:00:00Z",
            "2026-01-03T00:00:00Z",
            "2026-01-02T00:00:00Z",
        ]);
        let p = KeepPolicy {
            last: 2,
            ..Default::default()
        };
        let d = apply(&p, &s, &Utc);
        assert_eq!(kept(&d), vec![2, 3]);
        assert_eq!(d[0].reasons, vec!["last snapshot"]);
        assert!(!d[2].keep && d[2].reasons.is_empty());
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        // Two per day over three days: the later one of each of the two newest days.
        let s = list(&[
            "2026-03-01T08:00:00Z",
            "2026-03-01T20:00:00Z",
            "2026-03-02T08:00:00Z",
            "2026-03-02T20:00:00Z",
            "2026-03-03T08:00:00Z",
            "2026-03-03T20:00:00Z",
        ]);
        let p = KeepPolicy {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&p, &s, &Utc)), vec![4, 6]);
    }

    #[test]
    fn days_follow_the_time_zone() {
        // 23:30 UTC and 00:30 UTC are one day at UTC-2, two days in UTC.
        let s = list(&["2026-03-01T23:30:00Z", "2026-03-02T00:30:00Z"]);
        let p = KeepPolicy {
            daily: 5,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&p, &s, &Utc)), vec![1, 2]);
        let west = chrono::FixedOffset::west_opt(2 * 3600).unwrap();
        assert_eq!(kept(&apply(&p, &s, &west)), vec![2]);
    }

    #[test]
    fn weekly_monthly_yearly_and_hourly() {
        let s = list(&[
            "2024-06-01T10:00:00Z", // 1: year 2024
            "2025-12-31T10:00:00Z", // 2: year 2025, Dec
            "2026-01-05T10:00:00Z", // 3: ISO week 2 of 2026
            "2026-01-06T10:00:00Z", // 4: same week
            "2026-01-12T10:00:00Z", // 5: week 3
            "2026-01-12T11:00:00Z", // 6: same day, next hour
        ]);
        let weekly = KeepPolicy {
            weekly: 2,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&weekly, &s, &Utc)), vec![4, 6]);
        let monthly = KeepPolicy {
            monthly: 2,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&monthly, &s, &Utc)), vec![2, 6]);
        let yearly = KeepPolicy {
            yearly: 3,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&yearly, &s, &Utc)), vec![1, 2, 6]);
        let hourly = KeepPolicy {
            hourly: 2,
            ..Default::default()
        };
        assert_eq!(kept(&apply(&hourly, &s, &Utc)), vec![5, 6]);
    }

    #[test]
    fn within_is_relative_to_the_newest_snapshot() {
        let s = list(&[
            "2020-01-01T00:00:00Z",
            "2020-01-05T00:00:00Z",
            "2020-01-10T00:00:00Z",
        ]);
        let p = KeepPolicy {
            within: Some(Duration::days(6)),
            ..Default::default()
        };
        assert_eq!(kept(&apply(&p, &s, &Utc)), vec![2, 3]);
    }

    #[test]
    fn tags_and_rules_combine_with_reasons() {
        let mut s = list(&[
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-03T00:00:00Z",
        ]);
        s[0].2 = vec!["keep".into()];
        let p = KeepPolicy {
            last: 1,
            tags: vec!["keep".into()],
            ..Default::default()
        };
        let d = apply(&p, &s, &Utc);
        assert_eq!(kept(&d), vec![1, 3]);
        let old = d.iter().find(|d| d.id.as_bytes()[0] == 1).unwrap();
        assert_eq!(old.reasons, vec!["tagged keep"]);
        let both = KeepPolicy {
            last: 3,
            daily: 1,
            ..Default::default()
        };
        let d = apply(&both, &s, &Utc);
        assert_eq!(d[0].reasons, vec!["last snapshot", "daily snapshot"]);
    }

    #[test]
    fn empty_policy_and_group_by() {
        assert!(KeepPolicy::default().is_empty());
        assert!(!KeepPolicy {
            last: 1,
            ..Default::default()
        }
        .is_empty());
        let g = GroupBy::parse("host,paths").unwrap();
        assert!(g.host && g.paths && !g.tags);
        let none = GroupBy::parse("").unwrap();
        assert!(!none.host && !none.paths && !none.tags);
        assert!(GroupBy::parse("hostname").is_err());
    }
}
