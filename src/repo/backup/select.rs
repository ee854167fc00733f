//! What a backup leaves out (`--exclude` and friends, with restic's names and meaning):
//! patterns, cache folders, marker files, a size limit and file-system boundaries.
//!
//! Patterns are those of [`crate::repo::patterns`], matched against a file's absolute path;
//! a pattern that matches a folder leaves out everything in it. In exclude files, empty lines and lines starting with `#` are ignored,
//! `$VAR`/`${VAR}` are expanded, and a line starting with `!` takes back what an earlier
//! pattern excluded (the last matching line wins).

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use globset::GlobBuilder;

use crate::fs_at::{self, Stat};
use crate::repo::patterns::Patterns;

use crate::error::{Error, Result};

/// The signature a `CACHEDIR.TAG` file starts with (https://bford.info/cachedir/).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// What to leave out, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct SelectOptions {
    pub exclude: Vec<String>,
    pub iexclude: Vec<String>,
    pub exclude_caches: bool,
    /// `NAME` or `NAME:CONTENT`: a folder holding such a file is left out entirely.
    pub exclude_if_present: Vec<String>,
    pub exclude_larger_than: Option<u64>,
    pub one_file_system: bool,
}

/// The compiled selection.
#[derive(Debug, Default)]
pub struct Selection {
    exact: Option<Patterns>,
    folded: Option<Patterns>,
    caches: bool,
    markers: Vec<(String, Option<Vec<u8>>)>,
    larger_than: Option<u64>,
    one_file_system: bool,
}

/// Why an entry is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    Pattern,
    Larger,
    OtherFileSystem,
}

impl Selection {
    pub fn new(o: &SelectOptions) -> Result<Selection> {
        let markers = o
            .exclude_if_present
            .iter()
            .map(|m| match m.split_once(':') {
                Some((name, content)) => (name.to_string(), Some(content.as_bytes().to_vec())),
                None => (m.clone(), None),
            })
            .collect::<Vec<_>>();
        if let Some((bad, _)) = markers
            .iter()
            .find(|(n, _)| n.is_empty() || n.contains('/'))
        {
            return Err(Error::invalid(format!(
                "--exclude-if-present {bad:?}: expected a file name, optionally NAME:CONTENT"
            )));
        }
        Ok(Selection {
            exact: Patterns::new(&o.exclude, false, "exclude")?,
            folded: Patterns::new(&o.iexclude, true, "exclude")?,
            caches: o.exclude_caches,
            markers,
            larger_than: o.exclude_larger_than,
            one_file_system: o.one_file_system,
        })
    }

    /// Whether `path` (absolute) is left out by a pattern, its size, or its file system
    /// (`root_dev`: the device of the source it was found under).
    pub fn excluded(&self, path: &Path, meta: &Stat, root_dev: u64) -> Option<Excluded> {
        if self.exact.as_ref().is_some_and(|p| p.matches(path))
            || self.folded.as_ref().is_some_and(|p| p.matches(path))
        {
            return Some(Excluded::Pattern);
        }
        if meta.is_file() && self.larger_than.is_some_and(|max| meta.len() > max) {
            return Some(Excluded::Larger);
        }
        // A mount point is kept as an empty folder; nothing below it is read.
        if self.one_file_system && meta.dev() != root_dev && !meta.is_dir() {
            return Some(Excluded::OtherFileSystem);
        }
        None
    }

    /// Whether the walk stays out of folder `meta` (another file system, with `-x`): it is
    /// stored, empty.
    pub fn stays_out(&self, meta: &Stat, root_dev: u64) -> bool {
        self.one_file_system && meta.dev() != root_dev
    }

    /// What to do with a folder's entries given its marker files: `None` keeps them; `Some`
    /// keeps only the names listed (a cache folder keeps its `CACHEDIR.TAG`; a folder with an
    /// `--exclude-if-present` marker keeps nothing and is left out).
    pub fn folder_rule(&self, dir: &OwnedFd) -> FolderRule {
        for (name, content) in &self.markers {
            let marker = OsStr::new(name);
            let found = match content {
                None => Stat::at(dir, marker).is_ok(),
                Some(c) => starts_with(dir, marker, c),
            };
            if found {
                return FolderRule::LeaveOut;
            }
        }
        if self.caches && starts_with(dir, OsStr::new("CACHEDIR.TAG"), CACHEDIR_SIGNATURE) {
            return FolderRule::OnlyTag;
        }
        FolderRule::Keep
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_none()
            && self.folded.is_none()
            && !self.caches
            && self.markers.is_empty()
            && self.larger_than.is_none()
            && !self.one_file_system
    }
}

/// What [`Selection::folder_rule`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderRule {
    Keep,
    /// A cache folder: only its `CACHEDIR.TAG` is kept.
    OnlyTag,
    /// An `--exclude-if-present` marker: the folder is left out.
    LeaveOut,
}

/// Whether the regular file `name` in `dir` starts with `prefix` (not following a symlink).
fn starts_with(dir: &OwnedFd, name: &OsStr, prefix: &[u8]) -> bool {
    let Ok(f) = fs_at::openat(dir, name, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    let f = std::fs::File::from(f);
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut buf = vec![0u8; prefix.len()];
    f.take(prefix.len() as u64).read_exact(&mut buf).is_ok() && buf == prefix
}

/// Reads an exclude file: one pattern per line; blank lines and `#` comments skipped;
/// `$VAR` and `${VAR}` expanded from the environment (unset: empty).
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(expand_vars)
        .collect())
}

fn expand_vars(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&std::env::var(name).unwrap_or_default());
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Reads `--files-from` lists: `raw` splits on NUL bytes; `verbatim` takes every line as it
/// is; otherwise blank lines and `#` comments are skipped and each line may be a glob.
pub fn read_files_from(path: &Path, verbatim: bool, raw: bool) -> Result<Vec<std::path::PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = if path == Path::new("-") {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| Error::io("standard input", e))?;
        b
    } else {
        std::fs::read(path).map_err(|e| Error::io(path.display(), e))?
    };
    let os = |b: &[u8]| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b));
    if raw {
        return Ok(bytes
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(os)
            .collect());
    }
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if verbatim {
            if !line.is_empty() {
                out.push(os(line));
            }
            continue;
        }
        let t = line.trim_ascii();
        if t.is_empty() || t.starts_with(b"#") {
            continue;
        }
        out.extend(expand_glob(&os(t))?);
    }
    Ok(out)
}

/// A `--files-from` line with glob characters becomes the paths it matches (sorted); a line
/// without them is taken as it is (a missing path is reported by the backup).
fn expand_glob(p: &Path) -> Result<Vec<std::path::PathBuf>> {
    let s = p.to_string_lossy();
    if !s.contains(['*', '?', '[']) {
        return Ok(vec![p.to_path_buf()]);
    }
    let glob = GlobBuilder::new(&s)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::invalid(format!("--files-from pattern {s:?}: {e}")))?
        .compile_matcher();
    // Walk from the longest part without glob characters.
    let base: std::path::PathBuf = p
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect();
    let depth = p.components().count();
    let mut out = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if glob.is_match(&path) {
                out.push(path.clone());
            }
            if path.components().count() < depth && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excludes(patterns: &[&str], ci: bool, path: &str) -> bool {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Patterns::new(&p, ci, "exclude")
            .unwrap()
            .unwrap()
            .matches(Path::new(path))
    }

    #[test]
    fn patterns_follow_restic() {
        assert!(excludes(&["*.tmp"], false, "/home/a/x.tmp"));
        assert!(!excludes(&["*.tmp"], false, "/home/a/x.tmpl"));
        assert!(excludes(&["node_modules"], false, "/src/app/node_modules"));
        assert!(excludes(
            &["node_modules"],
            false,
            "/src/app/node_modules/x/y.js"
        ));
        assert!(excludes(&["/home/a/cache"], false, "/home/a/cache/f"));
        assert!(!excludes(&["/home/a/cache"], false, "/srv/home/a/cache"));
        assert!(excludes(&["build/*.o"], false, "/p/build/m.o"));
        assert!(!excludes(&["build/*.o"], false, "/p/build/sub/m.o"));
        assert!(excludes(&["/p/**/m.o"], false, "/p/a/b/m.o"));
        assert!(!excludes(&["*.TMP"], false, "/a/x.tmp"));
        assert!(excludes(&["*.TMP"], true, "/a/x.tmp"));
        // The last matching pattern wins; `!` takes back.
        assert!(!excludes(&["*.log", "!keep.log"], false, "/a/keep.log"));
        assert!(excludes(&["*.log", "!keep.log"], false, "/a/drop.log"));
        assert!(Patterns::new(&["[".into()], false, "exclude").is_err());
    }

    #[test]
    fn variables_expand() {
        std::env::set_var("CUSTODY_TEST_VAR", "/x");
        assert_eq!(expand_vars("$CUSTODY_TEST_VAR/a"), "/x/a");
        assert_eq!(expand_vars("${CUSTODY_TEST_VAR}b"), "/xb");
        assert_eq!(expand_vars("cost$"), "cost$");
    }
}
