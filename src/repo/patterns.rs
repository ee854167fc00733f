//! Glob patterns with restic's meaning, for what backup leaves out and what restore takes:
//! matched (with the `globset` crate) against a file's absolute path. `*` and `?` stay within
//! one path part, `**` spans any number of them, `[...]` is a class, `\` escapes. A pattern
//! that starts with `/` is anchored at the root; any other may match at any depth (`*.tmp`,
//! `node_modules`, `build/*.o`). A pattern that matches a folder matches everything in it. A
//! pattern `!P` takes back what an earlier one matched: the last matching pattern wins.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// One list of patterns (case-sensitive or not), in order, with negations.
#[derive(Debug)]
pub struct Patterns {
    set: GlobSet,
    negated: Vec<bool>,
}

impl Patterns {
    /// `None` for an empty list; `what` names the option in errors (`exclude`, `include`).
    pub fn new(
        patterns: &[String],
        case_insensitive: bool,
        what: &str,
    ) -> Result<Option<Patterns>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut b = GlobSetBuilder::new();
        let mut negated = Vec::new();
        for p in patterns {
            let (neg, pat) = match p.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, p.as_str()),
            };
            let pat = pat.trim_end_matches('/');
            if pat.is_empty() {
                continue;
            }
            let anchored = if pat.starts_with('/') {
                pat.to_string()
            } else {
                format!("**/{pat}")
            };
            // The pattern, and everything below what it matches.
            for g in [anchored.clone(), format!("{anchored}/**")] {
                let glob = GlobBuilder::new(&g)
                    .literal_separator(true)
                    .case_insensitive(case_insensitive)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| Error::invalid(format!("{what} pattern {p:?}: {e}")))?;
                b.add(glob);
                negated.push(neg);
            }
        }
        let set = b
            .build()
            .map_err(|e| Error::invalid(format!("{what} patterns: {e}")))?;
        Ok(Some(Patterns { set, negated }))
    }

    /// Whether the last pattern that matches `path` (or a folder above it) is not negated.
    pub fn matches(&self, path: &Path) -> bool {
        self.set
            .matches(path)
            .into_iter()
            .max()
            .is_some_and(|i| !self.negated[i])
    }
}
