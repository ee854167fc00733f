//! The sources as snapshots hold them (docs/FORMAT.md §8): each at its full path, below the
//! folders that lead to it.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::tree::{NodeKind, Tree};
use crate::fs_at::Stat;

use super::pending::Pending;
use super::walker::{node_base, open_path, xattrs_of, Walker};

impl Walker<'_> {
    /// The folders above the sources, each holding what lies below it (docs/FORMAT.md §8),
    /// and the sources themselves, walked as usual. A folder above a source is recorded as the
    /// folder a path through it reaches (a symlink such as `/var/run` is followed). `legacy`
    /// is the parent's root as snapshots before full paths kept it (sources by name): a source
    /// the parent does not hold at its full path is looked up there (a wrong match costs
    /// nothing, since a file is reused only when its inode, times and size all agree).
    pub(super) fn folders(
        &mut self,
        at_fd: &OwnedFd,
        at: &Path,
        sources: SourceTree,
        prev: Option<Tree>,
        legacy: Option<&Tree>,
    ) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        let mut oldest = 0;
        for (name, below) in sources.children {
            let path = at.join(&name);
            let prev_node = prev
                .as_ref()
                .and_then(|t| t.find(name.as_encoded_bytes()))
                .cloned();
            if let Some(meta) = below.source {
                let prev_node =
                    prev_node.or_else(|| legacy?.find(name.as_encoded_bytes()).cloned());
                self.root_dev = meta.dev();
                if let Some(n) = self.node(at_fd, &path, &name, &meta, prev_node.as_ref())? {
                    out.push(n);
                    self.held += 1;
                    self.ease(&mut out, &mut oldest)?;
                }
                continue;
            }
            let here = open_path(&path)?;
            let meta = Stat::of_fd(&here).map_err(|e| Error::io(path.display(), e))?;
            let mut node = node_base(&name, NodeKind::Dir, &meta);
            // Its time changes with every file made beside the source: recorded, it would
            // make every unchanged backup store new trees. Zero means "not recorded".
            (node.mtime_sec, node.mtime_nsec) = (0, 0);
            node.xattrs = xattrs_of(at_fd, &name, &path);
            let prev_tree = prev_node.and_then(|p| self.prev_tree(&p));
            self.summary.dirs += 1;
            let children = self.folders(&here, &path, below, prev_tree, legacy)?;
            self.deferred += 1;
            out.push(Pending {
                node,
                seqs: Vec::new(),
                children: Some(children),
            });
            self.held += 1;
            self.ease(&mut out, &mut oldest)?;
        }
        Ok(out)
    }
}

/// The sources as a tree of path parts: the folders above them, and each source at its place.
#[derive(Default)]
pub(super) struct SourceTree {
    children: std::collections::BTreeMap<std::ffi::OsString, SourceTree>,
    /// Set where a source is: its metadata.
    source: Option<Stat>,
}

impl SourceTree {
    /// `found`: absolute, normalised source paths (see [`super::source_path`]) with their
    /// metadata. A source inside another is refused: the outer one holds it already.
    pub(super) fn new(found: Vec<(std::path::PathBuf, Stat)>) -> Result<SourceTree> {
        let mut top = SourceTree::default();
        for (path, meta) in found {
            let mut at = &mut top;
            for part in path.components().skip(1) {
                at = at.children.entry(part.as_os_str().to_owned()).or_default();
            }
            at.source = Some(meta);
        }
        top.check(Path::new("/"))?;
        Ok(top)
    }

    fn check(&self, at: &Path) -> Result<()> {
        if self.source.is_some() {
            if let Some(inner) = self.first_source(at) {
                return Err(Error::invalid(format!(
                    "source {} is inside source {}: give only the outer one",
                    inner.display(),
                    at.display()
                )));
            }
        }
        for (name, below) in &self.children {
            below.check(&at.join(name))?;
        }
        Ok(())
    }

    /// The first source strictly below this place.
    fn first_source(&self, at: &Path) -> Option<std::path::PathBuf> {
        self.children.iter().find_map(|(name, below)| {
            let p = at.join(name);
            if below.source.is_some() {
                Some(p)
            } else {
                below.first_source(&p)
            }
        })
    }
}
