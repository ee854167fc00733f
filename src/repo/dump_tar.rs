//! `dump` of a folder: its tree as a tar stream (POSIX ustar with GNU long names, through the
//! `tar` crate), every file's content verified chunk by chunk as it is read, as restic does.

use std::io::{Read, Write};

use super::walk::Budget;
use super::{Index, Repository};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::pack::BlobType;

/// A file's verified plaintext as a reader: one chunk loaded at a time, and an error (not a
/// short entry) when the chunks do not add up to the size the tree records.
struct FileReader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    node: &'a Node,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    total: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.node.content.get(self.next) else {
                if self.total != self.node.size {
                    return Err(std::io::Error::other(format!(
                        "file {}: read {} bytes, the tree says {}",
                        self.node.name.lossy(),
                        self.total,
                        self.node.size
                    )));
                }
                return Ok(0);
            };
            let chunk = self
                .repo
                .load_blob(self.index, id.into(), BlobType::Data)
                .map_err(std::io::Error::other)?;
            let data = self
                .node
                .file_bytes(self.next == 0, &chunk)
                .map_err(std::io::Error::other)?;
            self.buf = data.to_vec();
            self.pos = 0;
            self.next += 1;
            self.total += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn header(n: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(n.mode & 0o7777);
    h.set_uid(u64::from(n.uid));
    h.set_gid(u64::from(n.gid));
    h.set_mtime(n.mtime_sec.max(0) as u64);
    h
}

/// Writes `node` (a folder, or a file) and everything below it to `out` as a tar stream,
/// with paths starting at `name`. Returns the number of entries.
pub fn write_tar(
    repo: &Repository,
    index: &Index,
    budget: Budget,
    name: &str,
    node: &Node,
    out: impl Write,
) -> Result<u64> {
    let mut tar = tar::Builder::new(out);
    let io = |e: std::io::Error| Error::io("tar output", e);
    let mut entries = 0u64;
    let mut stack: Vec<(String, Node)> = vec![(name.to_string(), node.clone())];
    let mut expanded = 0u64;
    while let Some((path, n)) = stack.pop() {
        entries += 1;
        match n.kind {
            NodeKind::Dir => {
                let mut h = header(&n, tar::EntryType::Directory, 0);
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(io)?;
                if let Some(sub) = n.subtree {
                    expanded += 1;
                    if expanded > budget.max_trees || path.matches('/').count() > budget.max_depth {
                        return Err(
                            budget.exceeded("the folder expands past its snapshot's budget")
                        );
                    }
                    let tree = repo.load_tree(index, &sub)?;
                    for child in tree.nodes.into_iter().rev() {
                        let p = format!("{path}/{}", child.name.lossy());
                        stack.push((p, child));
                    }
                }
            }
            NodeKind::File => {
                let mut h = header(&n, tar::EntryType::Regular, n.size);
                let reader = FileReader {
                    repo,
                    index,
                    node: &n,
                    next: 0,
                    buf: Vec::new(),
                    pos: 0,
                    total: 0,
                };
                tar.append_data(&mut h, &path, reader).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::Other {
                        Error::integrity(format!("file {path}"), e)
                    } else {
                        io(e)
                    }
                })?;
            }
            NodeKind::Symlink => {
                let mut h = header(&n, tar::EntryType::Symlink, 0);
                let target = n.target.as_ref().map(|t| t.lossy()).unwrap_or_default();
                tar.append_link(&mut h, &path, target).map_err(io)?;
            }
            // Fifos and devices: restic leaves them out of a tar dump too.
            _ => entries -= 1,
        }
    }
    tar.finish().map_err(io)?;
    Ok(entries)
}
