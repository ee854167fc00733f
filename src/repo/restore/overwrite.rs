//! `restore --overwrite`: what happens to a file already at a restored path (restic's names).

use std::str::FromStr;

use crate::format::tree::{Node, NodeKind};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it (the default, as in restic).
    #[default]
    Always,
    /// Keep it if it looks like the snapshot's: same type and, for a file, same size and
    /// modification time (to the nanosecond).
    IfChanged,
    /// Replace it only if the snapshot's is newer (modification time).
    IfNewer,
    /// Keep it.
    Never,
}

impl FromStr for Overwrite {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "if-newer" => Ok(Overwrite::IfNewer),
            "never" => Ok(Overwrite::Never),
            _ => Err(format!(
                "{s:?}: expected always, if-changed, if-newer or never"
            )),
        }
    }
}

fn kind_of(st: &libc::stat) -> Option<NodeKind> {
    Some(match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => NodeKind::File,
        libc::S_IFDIR => NodeKind::Dir,
        libc::S_IFLNK => NodeKind::Symlink,
        libc::S_IFIFO => NodeKind::Fifo,
        libc::S_IFCHR => NodeKind::CharDevice,
        libc::S_IFBLK => NodeKind::BlockDevice,
        _ => return None,
    })
}

impl Overwrite {
    /// Whether `node` replaces what is there now (`existing`).
    pub fn replaces(self, existing: &libc::stat, node: &Node) -> bool {
        let theirs = (existing.st_mtime, existing.st_mtime_nsec);
        let ours = (node.mtime_sec, i64::from(node.mtime_nsec));
        match self {
            Overwrite::Always => true,
            Overwrite::Never => false,
            Overwrite::IfNewer => ours > theirs,
            Overwrite::IfChanged => {
                let same = kind_of(existing) == Some(node.kind)
                    && ours == theirs
                    && (node.kind != NodeKind::File || existing.st_size as u64 == node.size);
                !same
            }
        }
    }
}
