//! Trees: one directory listing, JSON, stored as a tree blob whose id is the HMAC of its bytes.

use serde::{Deserialize, Serialize};

use super::name::RawName;
use super::DecodeError;
use crate::id::{ChunkId, TreeId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character or block device (`rdev` says which).
    #[serde(rename = "chardev")]
    CharDevice,
    #[serde(rename = "blockdev")]
    BlockDevice,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: RawName,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Unix permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// Regular files: length in bytes.
    #[serde(default)]
    pub size: u64,
    /// Regular files: inode number at backup time (change detection only).
    #[serde(default)]
    pub inode: u64,
    /// Regular files: status-change time at backup time (change detection only: catches edits
    /// that kept the mtime, such as `touch -r` or `rsync -t`).
    #[serde(default)]
    pub ctime_sec: i64,
    #[serde(default)]
    pub ctime_nsec: u32,
    /// Regular files: chunk ids in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ChunkId>,
    /// Directories: the tree id of their listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<TreeId>,
    /// Symlinks: the target, as stored by the file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RawName>,
    /// Small files backed up with `--no-dedup-below`: 16 random bytes that prefix the file's
    /// one chunk, so its chunk id says nothing to whoever guesses the content (docs/FORMAT.md
    /// §7, THREAT-MODEL §4). The file is the chunk without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<Salt>,
    /// Extended attributes this backup could read (POSIX ACLs and file capabilities among
    /// them), sorted by name (docs/FORMAT.md §7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Devices: the device number (`st_rdev`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// Files with more than one name: how many (`st_nlink`) and the file system they are on
    /// (`st_dev`), so that restore makes the names of one (`device`, `inode`) links again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One extended attribute: its name as text, its value base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: RawName,
    #[serde(with = "super::wrapped::b64")]
    pub value: Vec<u8>,
}

/// The salt of a small file's chunk: 16 bytes, hex in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Salt(pub [u8; 16]);

impl Serialize for Salt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Salt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Salt, D::Error> {
        let s = String::deserialize(d)?;
        let b = hex::decode(&s).map_err(serde::de::Error::custom)?;
        b.try_into()
            .map(Salt)
            .map_err(|_| serde::de::Error::custom("a salt is 16 bytes"))
    }
}

impl Node {
    /// A folder node with nothing recorded but its listing: what a snapshot's root is when a
    /// command needs it as a node (`dump` of the whole snapshot).
    pub fn folder(subtree: TreeId) -> Node {
        Node {
            name: RawName(Vec::new()),
            kind: NodeKind::Dir,
            mode: 0o755,
            mtime_sec: 0,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            size: 0,
            inode: 0,
            ctime_sec: 0,
            ctime_nsec: 0,
            content: Vec::new(),
            subtree: Some(subtree),
            target: None,
            salt: None,
            xattrs: Vec::new(),
            rdev: 0,
            links: 0,
            device: 0,
        }
    }

    /// The file's bytes in one chunk's plaintext: without the salt when the node has one
    /// (only its single chunk is salted). Refuses a chunk that does not start with the salt.
    pub fn file_bytes<'a>(&self, first_chunk: bool, data: &'a [u8]) -> Result<&'a [u8], String> {
        match (&self.salt, first_chunk) {
            (Some(salt), true) => data
                .strip_prefix(&salt.0[..])
                .ok_or_else(|| "its chunk does not start with the file's salt".to_string()),
            (Some(_), false) => Err("a salted file has one chunk only".into()),
            (None, _) => Ok(data),
        }
    }

    /// Bytes the salt adds to the file's chunk.
    pub fn salt_len(&self) -> u64 {
        if self.salt.is_some() {
            16
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tree {
    /// Sorted by name bytes; names are unique.
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&mut self) -> Vec<u8> {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        serde_json::to_vec(self).expect("tree serializes")
    }

    pub fn decode(b: &[u8]) -> Result<Tree, DecodeError> {
        let t: Tree = super::from_json("tree", b)?;
        for n in &t.nodes {
            if n.name.0.is_empty()
                || n.name.0 == b"."
                || n.name.0 == b".."
                || n.name.0.contains(&b'/')
                || n.name.0.contains(&0)
            {
                return Err(format!("tree holds an unsafe name {:?}", n.name.lossy()).into());
            }
        }
        // Strictly sorted means unique: a name listed twice (say a symlink, then a folder of
        // the same name) could make restore write through the link, outside the target.
        if let Some(w) = t.nodes.windows(2).find(|w| w[0].name >= w[1].name) {
            return Err(format!("tree lists {:?} twice or out of order", w[1].name.lossy()).into());
        }
        Ok(t)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name.0 == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            name: RawName(name.to_vec()),
            kind: NodeKind::File,
            mode: 0o644,
            mtime_sec: 1,
            mtime_nsec: 2,
            uid: 0,
            gid: 0,
            size: 3,
            inode: 4,
            ctime_sec: 5,
            ctime_nsec: 6,
            content: vec![ChunkId(crate::Id([1; 32]))],
            subtree: None,
            target: None,
            salt: None,
            xattrs: Vec::new(),
            rdev: 0,
            links: 0,
            device: 0,
        }
    }

    #[test]
    fn round_trip_sorted() {
        let mut t = Tree {
            nodes: vec![node(b"b"), node(b"a")],
        };
        let bytes = t.encode();
        let back = Tree::decode(&bytes).unwrap();
        assert_eq!(back.nodes[0].name.0, b"a");
        assert_eq!(back, t);
    }

    #[test]
    fn fail_duplicate_or_unsorted_names() {
        let mut link = node(b"x");
        link.kind = NodeKind::Symlink;
        let dir = node(b"x");
        let dup = serde_json::to_vec(&Tree {
            nodes: vec![link, dir],
        })
        .unwrap();
        assert!(Tree::decode(&dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let unsorted = serde_json::to_vec(&Tree {
            nodes: vec![node(b"b"), node(b"a")],
        })
        .unwrap();
        assert!(Tree::decode(&unsorted).is_err());
    }

    #[test]
    fn fail_path_traversal_names() {
        for bad in [&b".."[..], b"a/b", b"", b"."] {
            let mut t = Tree {
                nodes: vec![node(bad)],
            };
            assert!(Tree::decode(&t.encode()).is_err(), "{bad:?} accepted");
        }
    }
}
