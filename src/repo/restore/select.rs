//! What a restore takes (restic's meaning): paths inside the snapshot (`--include PATH`,
//! found by `crate::repo::locate`), include patterns (`--include` with glob characters,
//! `--iinclude`) and exclude patterns (`--exclude`, `--iexclude`). Patterns
//! ([`crate::repo::patterns`]) are matched against a node's path as `ls` shows it
//! (`/srv/data/report.txt`); what an exclude matches is left out with all it holds.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::Result;
use crate::repo::patterns::Patterns;

/// Whether `s` holds a glob character, so that `--include s` is a pattern, not a path.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[derive(Debug, Default)]
pub struct Filter {
    /// Paths from the root tree (`srv/data`): each is restored with all it holds.
    paths: Vec<Vec<u8>>,
    include: Vec<Patterns>,
    exclude: Vec<Patterns>,
}

impl Filter {
    pub fn new(
        paths: &[String],
        (include, iinclude): (&[String], &[String]),
        (exclude, iexclude): (&[String], &[String]),
    ) -> Result<Filter> {
        let paths = paths
            .iter()
            .map(|s| s.trim_matches('/').as_bytes().to_vec())
            .collect::<Vec<_>>();
        let build = |exact: &[String], folded: &[String], what: &str| -> Result<Vec<Patterns>> {
            Ok([
                Patterns::new(exact, false, what)?,
                Patterns::new(folded, true, what)?,
            ]
            .into_iter()
            .flatten()
            .collect())
        };
        Ok(Filter {
            // An empty path is the whole snapshot.
            paths: if paths.iter().any(Vec::is_empty) {
                Vec::new()
            } else {
                paths
            },
            include: build(include, iinclude, "include")?,
            exclude: build(exclude, iexclude, "exclude")?,
        })
    }

    /// Whether only part of the snapshot is taken (then folders made only to reach the
    /// included paths, which turn out empty, are removed again).
    pub fn partial(&self) -> bool {
        !self.paths.is_empty() || !self.include.is_empty()
    }

    /// (restore this node, descend into it) for the node at `rel` (from the root tree).
    pub fn decide(&self, rel: &[u8], is_dir: bool) -> (bool, bool) {
        let shown = [b"/", rel].concat();
        let shown = Path::new(std::ffi::OsStr::from_bytes(&shown));
        if self.exclude.iter().any(|p| p.matches(shown)) {
            return (false, false);
        }
        if !self.partial() {
            return (true, true);
        }
        let mut restore = self.include.iter().any(|p| p.matches(shown));
        // A pattern may match anywhere below a folder.
        let mut descend = restore || (is_dir && !self.include.is_empty());
        for inc in &self.paths {
            let under = rel == inc.as_slice()
                || (rel.starts_with(inc) && rel.get(inc.len()) == Some(&b'/'));
            let above = inc.starts_with(rel) && inc.get(rel.len()) == Some(&b'/');
            restore |= under;
            descend |= under || above;
        }
        (restore, descend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(paths: &[&str], include: &[&str], exclude: &[&str]) -> Filter {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Filter::new(&s(paths), (&s(include), &[]), (&s(exclude), &[])).unwrap()
    }

    #[test]
    fn paths_restore_what_they_hold_and_reach_it() {
        let inc = f(&["a/b"], &[], &[]);
        assert_eq!(inc.decide(b"a", true), (false, true));
        assert_eq!(inc.decide(b"a/b", true), (true, true));
        assert_eq!(inc.decide(b"a/b/c", false), (true, true));
        assert_eq!(inc.decide(b"a/bc", false), (false, false));
        assert_eq!(inc.decide(b"x", true), (false, false));
        assert_eq!(f(&[], &[], &[]).decide(b"x", true), (true, true));
        assert_eq!(f(&["", "a"], &[], &[]).decide(b"x", true), (true, true));
    }

    #[test]
    fn patterns_match_the_path_as_listed() {
        let inc = f(&[], &["*.conf"], &["/etc/secret*"]);
        assert_eq!(inc.decide(b"etc", true), (false, true));
        assert_eq!(inc.decide(b"etc/a.conf", false), (true, true));
        assert_eq!(inc.decide(b"etc/a.txt", false), (false, false));
        assert_eq!(inc.decide(b"etc/secret.conf", false), (false, false));
        let exc = f(&[], &[], &["cache"]);
        assert_eq!(exc.decide(b"home/a/cache", true), (false, false));
        assert_eq!(exc.decide(b"home/a/cached", true), (true, true));
        assert!(is_pattern("*.conf") && !is_pattern("/srv/data"));
    }
}
