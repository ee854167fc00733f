//! Where a path a user names lies in a snapshot's trees: the path the file had on its machine
//! (`/srv/data/report.txt`), or a path from a source's own name (`data/report.txt`, as
//! snapshots before full paths were addressed), in either layout (docs/FORMAT.md §8).

use crate::error::{Error, Result};
use crate::format::snapshot::{Layout, Snapshot};
use crate::format::tree::Node;
use crate::repo::restore::find_node;
use crate::repo::{Index, Repository};

/// A path found in a snapshot.
#[derive(Debug, Clone)]
pub struct Located {
    /// Its path from the root tree (`srv/data/report.txt`); empty for the root itself.
    pub rel: String,
    /// Its node; `None` for the root.
    pub node: Option<Node>,
}

/// The readings of `path` in the trees of `snap`, most literal first.
pub fn candidates(snap: &Snapshot, path: &str) -> Vec<String> {
    let clean = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/");
    let sources = snap.paths.iter().filter(|p| p.starts_with('/'));
    let mut out = Vec::new();
    match (snap.layout, path.starts_with('/')) {
        // An original path in a snapshot that keeps sources by name: from the source's name.
        (Layout::Names, true) => {
            for s in sources {
                let s = s.trim_end_matches('/');
                let name = s.rsplit('/').next().unwrap_or_default();
                let rest = format!("/{clean}");
                if s.is_empty() {
                    out.push(clean.clone());
                } else if let Some(below) = rest.strip_prefix(s) {
                    if below.is_empty() || below.starts_with('/') {
                        out.push(format!("{name}{below}"));
                    }
                }
            }
            out.push(clean);
        }
        (Layout::Names, false) => out.push(clean),
        // A path from a source's name in a snapshot that keeps full paths (with or without
        // a leading `/`, as snapshots before full paths were addressed).
        (Layout::Paths, _) => {
            out.push(clean.clone());
            let first = clean.split('/').next().unwrap_or_default();
            for s in sources {
                let s = s.trim_matches('/');
                let (above, name) = s.rsplit_once('/').unwrap_or(("", s));
                if !name.is_empty() && name == first {
                    out.push(if above.is_empty() {
                        clean.clone()
                    } else {
                        format!("{above}/{clean}")
                    });
                }
            }
        }
    }
    out.dedup();
    out
}

/// Finds `path` in the snapshot (see [`candidates`]): the first reading that exists. A path
/// from a source's name that two sources share is refused as ambiguous.
pub fn locate(repo: &Repository, index: &Index, snap: &Snapshot, path: &str) -> Result<Located> {
    let mut found: Vec<Located> = Vec::new();
    for (i, rel) in candidates(snap, path).into_iter().enumerate() {
        match find_node(repo, index, &snap.tree, &rel) {
            Ok(node) if i == 0 => return Ok(Located { rel, node }),
            Ok(node) => found.push(Located { rel, node }),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    match found.len() {
        0 => Err(Error::NotFound(format!(
            "{} in the snapshot (paths are as on the backed-up machine{})",
            crate::human::escape(path),
            snap.paths
                .iter()
                .find(|p| p.starts_with('/'))
                .map(|p| format!(", such as {}", crate::human::escape(p)))
                .unwrap_or_default()
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(Error::invalid(format!(
            "{} is ambiguous in this snapshot: it could be {}; give the full path",
            crate::human::escape(path),
            found
                .iter()
                .map(|l| format!("/{}", crate::human::escape(&l.rel)))
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(layout: Layout, paths: &[&str]) -> Snapshot {
        let mut s: Snapshot = serde_json::from_str(
            r#"{"format":1,"time":"2026-01-01T00:00:00Z","host":"h","paths":[],
            "tree":"0000000000000000000000000000000000000000000000000000000000000000",
            "session":"0000000000000000000000000000000000000000000000000000000000000000",
            "summary":{"files":0,"dirs":0,"symlinks":0,"files_skipped":0,"bytes_processed":0,
            "bytes_new":0,"bytes_added":0,"chunks_new":0,"duration_secs":0.0},"program":"t"}"#,
        )
        .expect("manifest");
        s.layout = layout;
        s.paths = paths.iter().map(|p| p.to_string()).collect();
        s
    }

    #[test]
    fn full_paths_are_read_as_they_were() {
        let s = snap(Layout::Paths, &["/srv/data", "/home/alice/data"]);
        assert_eq!(candidates(&s, "/srv/data/a.txt"), ["srv/data/a.txt"]);
        assert_eq!(
            candidates(&s, "/data/a.txt"),
            ["data/a.txt", "srv/data/a.txt", "home/alice/data/a.txt"]
        );
        assert_eq!(
            candidates(&s, "data/a.txt"),
            ["data/a.txt", "srv/data/a.txt", "home/alice/data/a.txt"]
        );
        assert_eq!(candidates(&s, "srv/./data/"), ["srv/data"]);
        assert_eq!(candidates(&s, ""), [""]);
    }

    #[test]
    fn original_paths_reach_sources_kept_by_name() {
        let s = snap(Layout::Names, &["/srv/data", "/etc"]);
        assert_eq!(
            candidates(&s, "/srv/data/a.txt"),
            ["data/a.txt", "srv/data/a.txt"]
        );
        assert_eq!(candidates(&s, "/etc"), ["etc"]);
        assert_eq!(candidates(&s, "/srv/database"), ["srv/database"]);
        assert_eq!(candidates(&s, "data/a.txt"), ["data/a.txt"]);
        let root = snap(Layout::Names, &["/"]);
        assert_eq!(candidates(&root, "/etc/hosts"), ["etc/hosts"]);
    }
}
