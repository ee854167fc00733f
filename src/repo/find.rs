//! `find PATTERN`: the files and folders whose name (or, for a pattern with a `/`, whose path)
//! matches, in every snapshot or the ones named. Each snapshot's trees are walked level by
//! level with the shared walker, within the snapshot's budget.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use super::walk::{Budget, TreeWalker, Visits};
use super::{Index, Repository};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::id::SnapshotId;

/// One match.
#[derive(Debug, Clone, Serialize)]
pub struct FindHit {
    pub snapshot: SnapshotId,
    pub path: String,
    pub kind: NodeKind,
    pub size: u64,
    pub mtime: Option<chrono::DateTime<chrono::Utc>>,
}

/// Compiled patterns: those without `/` match a name, the others a whole path (anchored at
/// the root when they start with `/`, at any depth otherwise), as in restic.
pub struct Matcher {
    names: GlobSet,
    paths: GlobSet,
}

impl Matcher {
    pub fn new(patterns: &[String], ignore_case: bool) -> Result<Matcher> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in patterns {
            let (set, glob) = if p.contains('/') {
                let anchored = if p.starts_with('/') {
                    p.trim_end_matches('/').to_string()
                } else {
                    format!("**/{}", p.trim_end_matches('/'))
                };
                (&mut paths, anchored)
            } else {
                (&mut names, p.clone())
            };
            set.add(
                GlobBuilder::new(&glob)
                    .literal_separator(true)
                    .case_insensitive(ignore_case)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| Error::invalid(format!("pattern {p:?}: {e}")))?,
            );
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::invalid(format!("patterns: {e}")))
        };
        Ok(Matcher {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    pub fn matches(&self, name: &str, path: &str) -> bool {
        self.names.is_match(name) || self.paths.is_match(path)
    }
}

/// Every match in `snapshots`, snapshot by snapshot, in path order within each.
pub fn find(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
    matcher: &Matcher,
) -> Result<Vec<FindHit>> {
    let mut hits = Vec::new();
    for (id, snap) in snapshots {
        let mut found = Vec::new();
        let mut walker =
            TreeWalker::new(repo, index, Visits::PerPath).with_budget(Budget::for_snapshot(snap));
        walker.walk(vec![(snap.tree, String::new())], |_, base, tree, next| {
            for n in tree?.nodes {
                let name = n.name.lossy();
                let path = format!("{base}/{name}");
                if matcher.matches(&name, &path) {
                    found.push(FindHit {
                        snapshot: *id,
                        path: path.clone(),
                        kind: n.kind,
                        size: n.size,
                        mtime: chrono::DateTime::from_timestamp(n.mtime_sec, n.mtime_nsec),
                    });
                }
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    next.push((sub, path));
                }
            }
            Ok(())
        })?;
        found.sort_by(|a, b| a.path.cmp(&b.path));
        hits.extend(found);
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::Matcher;

    #[test]
    fn names_and_paths() {
        let m = Matcher::new(
            &["*.conf".into(), "/etc/ssh/*".into(), "log/x".into()],
            false,
        )
        .unwrap();
        assert!(m.matches("nginx.conf", "/etc/nginx/nginx.conf"));
        assert!(m.matches("sshd", "/etc/ssh/sshd"));
        assert!(!m.matches("sshd", "/srv/etc/ssh/sshd"));
        assert!(m.matches("x", "/var/log/x"));
        assert!(!m.matches("conf", "/etc/conf"));
        let i = Matcher::new(&["*.JPG".into()], true).unwrap();
        assert!(i.matches("a.jpg", "/a.jpg"));
    }
}
