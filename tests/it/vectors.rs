//! Golden vectors that pin repository format version 1 (docs/FORMAT.md §16.1).
//!
//! Every other format test is a round trip, which a consistent change on both sides (an AAD
//! layout, a KDF label, a byte order) passes. These tests read bytes committed under
//! `tests/testdata/` instead:
//!
//! - `golden-v1/`: a repository written once by custody 0.1 (two snapshots), its owner and
//!   writer keyrings (sealed under [`PASSPHRASE`], a public constant). The built binary must
//!   still list, check, and restore it byte for byte.
//! - `vectors/`: one file per codec case (envelope per object kind, pack, index segment, tree,
//!   wrapped-key records), plus `fail_*` files that must fail at one named step.
//!
//! All keys are derived at test time from public labels ([`key`]); no key bytes are stored,
//! except the passphrase-sealed keyrings. Nonces are random, so the files are written once by
//! the ignored test [`write_vectors`] (`CUSTODY_WRITE_VECTORS=1`); the other tests only read.
//! `tests/testdata/vectors/independent.py` recomputes the pinned hex values below with Python's
//! standard library, straight from FORMAT.md.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use custody::chunker::{Chunker, ChunkerParams};
use custody::compress::{self, Compression};
use custody::crypto::envelope::{self, Binding, ObjectKind, OpenError};
use custody::crypto::kdf::{self, label};
use custody::crypto::{aead, Key32};
use custody::format::config::{ConfigBody, ENVELOPE_ALGORITHM};
use custody::format::garbage::{padded_json, GarbageMark, LockRecord};
use custody::format::index::{IndexSegment, PackEntries};
use custody::format::name::RawName;
use custody::format::snapshot::{Snapshot, Summary};
use custody::format::tree::{Node, NodeKind, Tree};
use custody::format::wrapped::{context, context_bytes, Purpose, WrappedKeyRecord};
use custody::id::{BlobId, ChunkId, PackId, SessionId, SnapshotId};
use custody::keyservice::{KeyService, KeyringRole, LocalKeyring};
use custody::pack::{self, BlobEntry, BlobType, PackBuilder, PackKey};
use custody::{Error, Id};
use secrecy::SecretString;

use crate::common::{self, Sandbox, EXIT_KEY_SERVICE};

/// The passphrase that seals the golden keyrings. Public: these keys protect nothing.
const PASSPHRASE: &str = "golden-vector-passphrase-not-a-secret";
/// Set to 1 to let [`write_vectors`] write missing vector folders.
const WRITE_ENV: &str = "CUSTODY_WRITE_VECTORS";

// ---------------------------------------------------------------------------------------------
// Fixed inputs, all derived from public labels.

fn sha256(label: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, label.as_bytes());
    d.as_ref().try_into().expect("32 bytes")
}

/// A fixed key: SHA-256 of a public label.
fn key(label: &str) -> Key32 {
    Key32::from_slice(&sha256(label)).expect("32 bytes")
}

/// An id of any kind, from a label.
fn id<T: From<Id>>(label: &str) -> T {
    T::from(Id(sha256(label)))
}

fn repo_id() -> Id {
    id("custody golden vector repository id")
}
/// The repository secret `M`.
fn secret() -> Key32 {
    key("custody golden vector repository secret")
}
fn secret_id() -> Id {
    id("custody golden vector secret id")
}
/// `DEK_s` of the session [`session`].
fn dek() -> Key32 {
    key("custody golden vector session key")
}
fn session() -> SessionId {
    id("custody golden vector session id")
}
fn pack_id() -> PackId {
    id("custody golden vector pack id")
}
/// The root key of the envelope vectors (the envelope codec alone, whatever the kind).
fn envelope_key() -> Key32 {
    key("custody golden vector key")
}
fn zero() -> Id {
    Id::default()
}

fn k_id() -> Key32 {
    kdf::derive_key(repo_id().as_bytes(), &secret(), &[label::CHUNK_ID])
}

/// A chunk, tree or blob id: `HMAC(K_id, data)`.
fn hmac_id<T: From<Id>>(data: &[u8]) -> T {
    T::from(Id(kdf::hmac_sha256(&k_id(), data)))
}

fn time(s: &str) -> DateTime<Utc> {
    s.parse().expect("RFC 3339 time")
}

fn unhex32(s: &str) -> [u8; 32] {
    let mut b = [0u8; 32];
    hex::decode_to_slice(s, &mut b).expect("64 hex digits");
    b
}

/// A small data chunk.
const CHUNK: &[u8] = b"custody golden vector chunk\n";

fn fixed_tree() -> Tree {
    let file = |name: &[u8], mode, size, content: Vec<ChunkId>| Node {
        name: RawName(name.to_vec()),
        kind: NodeKind::File,
        mode,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 123_456_789,
        uid: 1000,
        gid: 1000,
        size,
        inode: 1234,
        ctime_sec: 1_700_000_001,
        ctime_nsec: 5,
        content,
        subtree: None,
        target: None,
        salt: None,
        xattrs: Vec::new(),
        rdev: 0,
        links: 0,
        device: 0,
    };
    let other = |name: &[u8], kind, mode| Node {
        name: RawName(name.to_vec()),
        kind,
        mode,
        mtime_sec: 1_600_000_000,
        mtime_nsec: 0,
        uid: 0,
        gid: 0,
        size: 0,
        inode: 0,
        ctime_sec: 0,
        ctime_nsec: 0,
        content: vec![],
        subtree: None,
        target: None,
        salt: None,
        xattrs: Vec::new(),
        rdev: 0,
        links: 0,
        device: 0,
    };
    let mut dir = other(b"b-dir", NodeKind::Dir, 0o755);
    dir.subtree = Some(id("custody golden vector subtree id"));
    let mut link = other(b"c-link", NodeKind::Symlink, 0o777);
    link.target = Some(RawName(b"a-file.txt".to_vec()));
    Tree {
        // Out of order on purpose: encode sorts by name bytes.
        nodes: vec![
            link,
            file(
                b"a-file.txt",
                0o644,
                CHUNK.len() as u64,
                vec![hmac_id(CHUNK)],
            ),
            // Not UTF-8: written as {"hex": ...}.
            file(b"d\xffe", 0o600, 0, vec![]),
            dir,
        ],
    }
}

fn tree_bytes() -> Vec<u8> {
    fixed_tree().encode()
}

fn fixed_snapshot() -> Snapshot {
    Snapshot {
        format: 1,
        time: time("2024-01-02T03:04:05Z"),
        host: "golden-host".into(),
        username: "golden".into(),
        paths: vec!["/golden/source".into()],
        tags: vec!["golden".into()],
        tree: hmac_id(&tree_bytes()),
        session: session(),
        parent: Some(id("custody golden vector parent snapshot id")),
        summary: Summary {
            files: 4,
            dirs: 3,
            symlinks: 2,
            files_skipped: 0,
            files_unchanged: 1,
            bytes_processed: 307_200,
            bytes_new: 1024,
            bytes_added: 9000,
            chunks_new: 2,
            duration_secs: 1.5,
            sockets_skipped: 0,
        },
        program: "custody 0.1.0".into(),
        writer: None,
        chain: None,
        repaired: None,
        layout: Default::default(),
        original: None,
    }
}

/// The manifest plaintext exactly as `repo::snapshots` pads it (1 KiB, spaces).
fn snapshot_bytes() -> Vec<u8> {
    let mut json = serde_json::to_vec(&fixed_snapshot()).expect("serializes");
    json.resize(json.len().div_ceil(1024) * 1024, b' ');
    json
}

fn fixed_mark() -> GarbageMark {
    GarbageMark {
        format: 1,
        time: time("2024-01-02T03:04:05.123Z"),
        packs: vec![pack_id()],
        segments: vec![id("custody golden vector segment id")],
        sessions: vec![session()],
        unindexed: vec![id("custody golden vector unindexed pack id")],
    }
}

fn fixed_lock() -> LockRecord {
    LockRecord {
        format: 1,
        operation: "prune".into(),
        host: "golden-host".into(),
        pid: 4242,
        started: time("2024-01-02T03:04:05Z"),
        refreshed: time("2024-01-02T03:09:05.000001Z"),
    }
}

/// Entries whose numbers have distinct bytes, so that a byte-order change shows.
fn entry(
    label: &str,
    t: BlobType,
    c: Compression,
    offset: u32,
    length: u32,
    raw: u32,
) -> BlobEntry {
    BlobEntry {
        id: id(label),
        blob_type: t,
        compression: c,
        offset,
        length,
        raw_length: raw,
    }
}

fn fixed_segment() -> IndexSegment {
    IndexSegment {
        packs: vec![
            PackEntries {
                pack: pack_id(),
                session: session(),
                blobs: vec![
                    entry(
                        "custody golden vector blob 1",
                        BlobType::Data,
                        Compression::Zstd,
                        0,
                        0x0001_0203,
                        0x0004_0506,
                    ),
                    entry(
                        "custody golden vector blob 2",
                        BlobType::Data,
                        Compression::None,
                        0x0001_0203,
                        0x0000_0708,
                        0x0000_0708 - 60,
                    ),
                ],
            },
            PackEntries {
                pack: id("custody golden vector pack id 2"),
                session: id("custody golden vector session id 2"),
                blobs: vec![entry(
                    "custody golden vector tree blob",
                    BlobType::Tree,
                    Compression::Zstd,
                    0,
                    0x0000_0a0b,
                    0x000c_0d0e,
                )],
            },
        ],
        provisional: false,
    }
}

/// One envelope vector per object kind: file, binding parts (§4.3) and plaintext.
struct EnvelopeCase {
    file: &'static str,
    kind: ObjectKind,
    container: Id,
    object: Id,
    key_id: Id,
    plaintext: Vec<u8>,
}

impl EnvelopeCase {
    fn binding<'a>(&'a self, repo: &'a Id) -> Binding<'a> {
        Binding {
            repo,
            kind: self.kind,
            container: &self.container,
            object: &self.object,
            key_id: &self.key_id,
        }
    }
}

fn envelope_cases() -> Vec<EnvelopeCase> {
    let tree = tree_bytes();
    let header_entries = fixed_segment().packs[0].blobs.clone();
    vec![
        EnvelopeCase {
            file: "envelope/kind1-data-blob.hex",
            kind: ObjectKind::DataBlob,
            container: pack_id().id(),
            object: hmac_id(CHUNK),
            key_id: session().id(),
            plaintext: CHUNK.to_vec(),
        },
        EnvelopeCase {
            file: "envelope/kind2-tree-blob.hex",
            kind: ObjectKind::TreeBlob,
            container: pack_id().id(),
            object: hmac_id(&tree),
            key_id: session().id(),
            plaintext: tree,
        },
        EnvelopeCase {
            file: "envelope/kind3-pack-header.hex",
            kind: ObjectKind::PackHeader,
            container: pack_id().id(),
            object: pack_id().id(),
            key_id: session().id(),
            plaintext: pack::encode_header(&header_entries),
        },
        EnvelopeCase {
            file: "envelope/kind4-index.hex",
            kind: ObjectKind::Index,
            container: zero(),
            object: id("custody golden vector segment id"),
            key_id: secret_id(),
            plaintext: fixed_segment().encode(),
        },
        EnvelopeCase {
            file: "envelope/kind5-snapshot.hex",
            kind: ObjectKind::Snapshot,
            container: zero(),
            object: id("custody golden vector snapshot id"),
            key_id: session().id(),
            plaintext: snapshot_bytes(),
        },
        EnvelopeCase {
            file: "envelope/kind6-garbage.hex",
            kind: ObjectKind::Garbage,
            container: zero(),
            object: id("custody golden vector mark id"),
            key_id: secret_id(),
            plaintext: padded_json(&fixed_mark(), 4096),
        },
        EnvelopeCase {
            file: "envelope/kind7-lock.hex",
            kind: ObjectKind::Lock,
            container: zero(),
            object: id("custody golden vector lock id"),
            key_id: secret_id(),
            plaintext: padded_json(&fixed_lock(), 1024),
        },
    ]
}

fn snapshot_case() -> EnvelopeCase {
    envelope_cases()
        .into_iter()
        .find(|c| c.kind == ObjectKind::Snapshot)
        .expect("snapshot case")
}

fn data_blob_case() -> EnvelopeCase {
    envelope_cases()
        .into_iter()
        .find(|c| c.kind == ObjectKind::DataBlob)
        .expect("data blob case")
}

/// One change to a valid vector. Negative offsets count from the end.
#[derive(Clone, Copy)]
enum Edit {
    Xor(isize, u8),
    Set(usize, u8),
    Truncate(usize),
    DropLast(usize),
}

fn apply(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = base.to_vec();
    for e in edits {
        match *e {
            Edit::Xor(at, x) => {
                let i = if at < 0 {
                    b.len() - at.unsigned_abs()
                } else {
                    at as usize
                };
                b[i] ^= x;
            }
            Edit::Set(at, v) => b[at] = v,
            Edit::Truncate(n) => b.truncate(n),
            Edit::DropLast(n) => b.truncate(b.len() - n),
        }
    }
    b
}

/// The `fail_` envelope vectors: each is `kind5-snapshot.hex` with the edits shown, and opens
/// (under the snapshot binding) to exactly this error, the first step of §4.5 that fails.
fn envelope_fail_cases() -> Vec<(&'static str, Vec<Edit>, OpenError)> {
    use Edit::*;
    let kind_error = OpenError::Kind {
        expected: ObjectKind::Snapshot,
        found: ObjectKind::Index as u8,
    };
    vec![
        // Step 1: shorter than header + nonce + commitment + tag.
        (
            "fail_truncated.hex",
            vec![Truncate(99)],
            OpenError::Truncated,
        ),
        // Step 2.
        ("fail_magic.hex", vec![Xor(0, 0x01)], OpenError::BadMagic),
        // Step 3: no older (downgrade) and no newer version.
        ("fail_version-0.hex", vec![Set(4, 0)], OpenError::Version(0)),
        ("fail_version-2.hex", vec![Set(4, 2)], OpenError::Version(2)),
        // Step 4.
        (
            "fail_algorithm.hex",
            vec![Set(6, 2)],
            OpenError::Algorithm(2),
        ),
        // Step 5: an index segment's kind byte on a snapshot.
        ("fail_kind.hex", vec![Set(5, 4)], kind_error.clone()),
        // Step 6: the reserved byte is refused as an authentication failure.
        ("fail_reserved.hex", vec![Set(7, 1)], OpenError::Unauthentic),
        // Step 7.
        ("fail_key-id.hex", vec![Xor(8, 0x01)], OpenError::KeyId),
        (
            "fail_key-id-last-byte.hex",
            vec![Xor(39, 0x80)],
            OpenError::KeyId,
        ),
        // Step 8: the commitment (bytes 52..84) is checked before the AEAD.
        (
            "fail_commitment.hex",
            vec![Xor(52, 0x01)],
            OpenError::Commitment,
        ),
        (
            "fail_commitment-last-byte.hex",
            vec![Xor(83, 0x80)],
            OpenError::Commitment,
        ),
        // Step 9: nonce, ciphertext, tag, a lost byte.
        (
            "fail_nonce.hex",
            vec![Xor(40, 0x01)],
            OpenError::Unauthentic,
        ),
        (
            "fail_ciphertext.hex",
            vec![Xor(84, 0x01)],
            OpenError::Unauthentic,
        ),
        ("fail_tag.hex", vec![Xor(-1, 0x01)], OpenError::Unauthentic),
        (
            "fail_tag-first-byte.hex",
            vec![Xor(-16, 0x80)],
            OpenError::Unauthentic,
        ),
        (
            "fail_truncated-tag.hex",
            vec![DropLast(1)],
            OpenError::Unauthentic,
        ),
        // Order: the first failing step is reported.
        (
            "fail_order-version-before-kind.hex",
            vec![Set(4, 2), Set(5, 4)],
            OpenError::Version(2),
        ),
        (
            "fail_order-algorithm-before-kind.hex",
            vec![Set(6, 2), Set(5, 4)],
            OpenError::Algorithm(2),
        ),
        (
            "fail_order-kind-before-key-id.hex",
            vec![Set(5, 4), Xor(8, 0x01)],
            kind_error,
        ),
        (
            "fail_order-key-id-before-commitment.hex",
            vec![Xor(8, 0x01), Xor(52, 0x01)],
            OpenError::KeyId,
        ),
        (
            "fail_order-commitment-before-tag.hex",
            vec![Xor(52, 0x01), Xor(-1, 0x01)],
            OpenError::Commitment,
        ),
    ]
}

/// The `fail_` blob vectors: `blob-data.hex` (a DataBlob sealed with `seal_blob`) edited.
fn blob_fail_cases() -> Vec<(&'static str, Vec<Edit>, OpenError)> {
    use Edit::*;
    vec![
        (
            "fail_blob-truncated.hex",
            vec![Truncate(59)],
            OpenError::Truncated,
        ),
        (
            "fail_blob-commitment.hex",
            vec![Xor(12, 0x01)],
            OpenError::Commitment,
        ),
        (
            "fail_blob-nonce.hex",
            vec![Xor(0, 0x01)],
            OpenError::Unauthentic,
        ),
        (
            "fail_blob-tag.hex",
            vec![Xor(-1, 0x01)],
            OpenError::Unauthentic,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Files.

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata")
}

fn vectors() -> PathBuf {
    testdata().join("vectors")
}

fn golden() -> PathBuf {
    testdata().join("golden-v1")
}

fn read_hex(rel: &str) -> Vec<u8> {
    let path = vectors().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run the ignored write_vectors test)",
            path.display()
        )
    });
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(digits).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(rel: &str) -> T {
    let path = vectors().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Lowercase hex, 32 bytes a line, so a diff shows where bytes changed.
fn write_hex(dir: &Path, rel: &str, bytes: &[u8]) {
    let mut text = String::with_capacity(bytes.len() * 2 + bytes.len() / 32 + 1);
    for line in bytes.chunks(32) {
        text.push_str(&hex::encode(line));
        text.push('\n');
    }
    write_file(&dir.join(rel), text.as_bytes());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let m = e.metadata().expect("metadata");
        n += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// Copies a golden keyring to `to` with mode 0600 (git does not keep modes; custody refuses a
/// keyring others can read).
fn copy_keyring(name: &str, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let dest = to.join("keyring.json");
    std::fs::copy(golden().join(name).join("keyring.json"), &dest).expect("copy keyring");
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn passphrase() -> SecretString {
    SecretString::from(PASSPHRASE.to_string())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// A golden keyring opened from a 0600 copy.
fn open_keyring(name: &str) -> (tempfile::TempDir, LocalKeyring) {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = dir.path().join(name);
    copy_keyring(name, &k);
    let ring = LocalKeyring::open(&k, Some(&passphrase()))
        .unwrap_or_else(|e| panic!("golden {name} does not open: {e}"));
    (dir, ring)
}

// ---------------------------------------------------------------------------------------------
// The golden repository's source tree: recreated by the same code for backup and comparison.

/// The big file: several chunks at the golden repository's 64 KiB average chunk size.
const BIG_LEN: usize = 300 * 1024;

fn notes(version: u8) -> Vec<u8> {
    match version {
        1 => b"notes, version 1: the golden repository's first snapshot\n".to_vec(),
        _ => b"notes, version 2: changed before the second snapshot, and longer than before\n"
            .repeat(3),
    }
}

/// Writes the source tree of snapshot `version` (1 or 2) into `root`, with fixed modes and
/// mtimes. Only `notes.txt` differs between the versions.
fn make_source(root: &Path, version: u8) {
    use std::os::unix::fs::PermissionsExt;
    let file = |rel: &str, data: &[u8], mode: u32, mtime: i64| {
        let p = root.join(rel);
        common::write(&p, data);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(mtime, 0)).expect("mtime");
    };
    file(
        "README.txt",
        &b"custody golden repository, format version 1. Nothing here is secret.\n".repeat(20),
        0o644,
        1_700_000_000,
    );
    file(
        "notes.txt",
        &notes(version),
        0o600,
        1_700_000_100 + i64::from(version),
    );
    file(
        "big.bin",
        &common::random_bytes(BIG_LEN, 2024),
        0o644,
        1_700_000_200,
    );
    file("run.sh", b"#!/bin/sh\necho golden\n", 0o755, 1_700_000_300);
    file(
        "docs/deep/leaf.txt",
        b"a leaf two folders down\n",
        0o640,
        1_700_000_400,
    );
    file("docs/index.txt", b"", 0o644, 1_700_000_500);
    std::os::unix::fs::symlink("notes.txt", root.join("link-to-notes")).expect("symlink");
    std::os::unix::fs::symlink("../../README.txt", root.join("docs/deep/up")).expect("symlink");
    std::fs::create_dir_all(root.join("docs/empty")).expect("mkdir");
    for (rel, mode) in [
        ("docs/empty", 0o700),
        ("docs/deep", 0o750),
        ("docs", 0o755),
        ("", 0o755),
    ] {
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
}

fn source_size(version: u8) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    make_source(&dir.path().join("source"), version);
    fn files(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .expect("read_dir")
            .map(|e| {
                let e = e.expect("entry");
                let t = e.file_type().expect("type");
                if t.is_dir() {
                    files(&e.path())
                } else if t.is_file() {
                    e.metadata().expect("metadata").len()
                } else {
                    0
                }
            })
            .sum()
    }
    files(&dir.path().join("source"))
}

/// A sandbox holding a copy of the golden repository, both keyrings and the passphrase file.
struct Golden {
    sb: Sandbox,
}

impl Golden {
    fn new() -> Golden {
        let sb = Sandbox::new();
        copy_dir(&golden().join("repo"), &sb.repo());
        // Git keeps no empty folders; `init` made these.
        for d in ["keys", "data", "index", "snapshots", "garbage", "locks"] {
            std::fs::create_dir_all(sb.repo().join(d)).expect("mkdir");
        }
        copy_keyring("owner-keyring", &sb.path("owner-keyring"));
        copy_keyring("writer-keyring", &sb.path("writer-keyring"));
        common::write(&sb.path("passphrase"), format!("{PASSPHRASE}\n").as_bytes());
        Golden { sb }
    }

    fn args(&self, keyring: &str, rest: &[&str]) -> Vec<String> {
        let mut a = vec![
            "--key-service".to_string(),
            format!("local:{}", self.sb.path(keyring).display()),
            "--passphrase-file".to_string(),
            self.sb.path("passphrase").display().to_string(),
        ];
        a.extend(rest.iter().map(|s| s.to_string()));
        a
    }

    fn run(&self, keyring: &str, rest: &[&str]) -> common::Run {
        let a = self.args(keyring, rest);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.sb.run(&a)
    }

    /// The snapshots as `snapshots --json` lists them, by tag.
    fn snapshots(&self) -> Vec<serde_json::Value> {
        let v = self
            .run("owner-keyring", &["--json", "snapshots"])
            .ok()
            .json();
        v.as_array().expect("array").clone()
    }

    /// Golden snapshots keep their source by name (`source`); `at` is where a snapshot made
    /// now, which keeps full paths, had its source.
    fn restore_and_compare_at(
        &self,
        snapshot_id: &str,
        version: u8,
        name: &str,
        at: Option<&Path>,
    ) {
        let out = self.sb.path(name);
        self.run(
            "owner-keyring",
            &[
                "restore",
                snapshot_id,
                "--target",
                out.to_str().expect("utf-8"),
            ],
        )
        .ok();
        let expected = self.sb.path(&format!("{name}-expected"));
        make_source(&expected.join("source"), version);
        let got = match at {
            Some(at) => common::restored(&out, at),
            None => out.join("source"),
        };
        common::assert_same_tree(&expected.join("source"), &got);
    }

    fn restore_and_compare(&self, snapshot_id: &str, version: u8, name: &str) {
        self.restore_and_compare_at(snapshot_id, version, name, None)
    }
}

fn by_tag<'a>(snaps: &'a [serde_json::Value], tag: &str) -> &'a serde_json::Value {
    snaps
        .iter()
        .find(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == tag))
        })
        .unwrap_or_else(|| panic!("no snapshot tagged {tag}: {snaps:?}"))
}

// ---------------------------------------------------------------------------------------------
// 1. The golden repository.

#[test]
fn golden_v1_repository_lists_checks_and_restores() {
    let g = Golden::new();
    let snaps = g.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let on_disk = common::list_ids(&g.sb.repo().join("snapshots"));
    let mut listed: Vec<String> = snaps
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, on_disk);

    let v1 = by_tag(&snaps, "v1");
    let v2 = by_tag(&snaps, "v2");
    for s in [v1, v2] {
        assert_eq!(s["host"], "golden-v1");
        let paths = s["paths"].as_array().expect("paths");
        assert_eq!(paths.len(), 1);
        assert!(paths[0].as_str().expect("path").ends_with("/source"), "{s}");
        assert_eq!(s["summary"]["files"], 6, "{s}");
        assert_eq!(s["summary"]["symlinks"], 2, "{s}");
        assert_eq!(s["summary"]["files_skipped"], 0, "{s}");
    }
    assert!(v1["parent"].is_null(), "{v1}");
    assert_eq!(
        v2["parent"], v1["id"],
        "the second backup used the first as parent"
    );
    assert_eq!(v1["summary"]["bytes_processed"], source_size(1));
    // Only notes.txt was read again for the second snapshot (bytes_processed counts the
    // unchanged files too).
    assert_eq!(v2["summary"]["files_unchanged"], 5, "{v2}");
    assert_eq!(v2["summary"]["bytes_processed"], source_size(2));

    let check = g
        .run("owner-keyring", &["--json", "check", "--read-data"])
        .ok()
        .json();
    assert_eq!(check["snapshots"], 2, "{check}");
    assert_eq!(
        check["problems"].as_array().map(Vec::len),
        Some(0),
        "{check}"
    );
    assert_eq!(
        check["leftovers"].as_array().map(Vec::len),
        Some(0),
        "{check}"
    );
    assert!(
        check["packs_read"].as_u64().expect("packs_read") >= 2,
        "{check}"
    );
    // README, notes (twice), run.sh, leaf.txt, index.txt, big.bin in several chunks, and trees.
    assert!(
        check["blobs_verified"].as_u64().expect("blobs") >= 12,
        "{check}"
    );

    g.restore_and_compare(v1["id"].as_str().expect("id"), 1, "restore-v1");
    g.restore_and_compare(v2["id"].as_str().expect("id"), 2, "restore-v2");
}

#[test]
fn golden_v1_writer_keyring_writes_but_cannot_read() {
    let g = Golden::new();
    let src = g.sb.path("src");
    make_source(&src.join("source"), 2);
    let b = g
        .run(
            "writer-keyring",
            &[
                "--json",
                "backup",
                "--host",
                "golden-v1",
                "--tag",
                "writer",
                src.join("source").to_str().expect("utf-8"),
            ],
        )
        .ok()
        .json();
    // Same chunker (K_gear from M) and same chunk ids (K_id): every data chunk of the source
    // is already in the golden repository; only trees (new inodes, ctimes) are new.
    assert_eq!(b["bytes_processed"], source_size(2), "{b}");
    assert!(
        b["bytes_new"].as_u64().expect("bytes_new") < 16 * 1024,
        "{b}"
    );
    let writer_snapshot = b["snapshot_id"].as_str().expect("id").to_string();

    // Write-only: the writer cannot unwrap a session key.
    let out = g.sb.path("writer-restore");
    let v2 = by_tag(&g.snapshots(), "v2")["id"]
        .as_str()
        .expect("id")
        .to_string();
    for snap in [v2.as_str(), writer_snapshot.as_str()] {
        g.run(
            "writer-keyring",
            &["restore", snap, "--target", out.to_str().expect("utf-8")],
        )
        .code(EXIT_KEY_SERVICE);
    }

    // What the writer added is readable by the owner, next to the version-1 data.
    let check = g
        .run("owner-keyring", &["--json", "check", "--read-data"])
        .ok()
        .json();
    assert_eq!(check["snapshots"], 3, "{check}");
    assert_eq!(
        check["problems"].as_array().map(Vec::len),
        Some(0),
        "{check}"
    );
    g.restore_and_compare_at(
        &writer_snapshot,
        2,
        "restore-writer",
        Some(&src.join("source")),
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Codec vectors.

#[test]
fn envelope_vectors_open_per_kind() {
    let root = envelope_key();
    let repo = repo_id();
    let cases = envelope_cases();
    assert_eq!(cases.len(), 7, "one vector per object kind");
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(c.kind as u8, i as u8 + 1);
        assert_eq!(ObjectKind::from_u8(c.kind as u8), Some(c.kind));
        let bytes = read_hex(c.file);
        assert_eq!(
            bytes.len(),
            c.plaintext.len() + envelope::ENVELOPE_OVERHEAD,
            "{}",
            c.file
        );
        // §4.1: the plaintext header.
        assert_eq!(&bytes[..4], b"CSTD", "{}", c.file);
        assert_eq!(bytes[4..8], [1, c.kind as u8, 1, 0], "{}", c.file);
        assert_eq!(&bytes[8..40], c.key_id.as_bytes(), "{}", c.file);
        let h = envelope::parse_header(&bytes).expect("header");
        assert_eq!((h.kind, h.key_id), (c.kind as u8, c.key_id));
        let opened = envelope::open_object(&root, &c.binding(&repo), &bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", c.file));
        assert!(opened == c.plaintext, "{}: plaintext differs", c.file);
    }
    // The plaintexts decode to the fixed values (and so pin the JSON and binary codecs).
    let snap: Snapshot = serde_json::from_slice(&snapshot_bytes()).expect("snapshot");
    assert_eq!(snap, fixed_snapshot());
    let mark: GarbageMark =
        serde_json::from_slice(&padded_json(&fixed_mark(), 4096)).expect("mark");
    assert_eq!(mark, fixed_mark());
    let lock: LockRecord = serde_json::from_slice(&padded_json(&fixed_lock(), 1024)).expect("lock");
    assert_eq!(lock, fixed_lock());
    assert_eq!(
        pack::decode_header(&pack::encode_header(&fixed_segment().packs[0].blobs)),
        Ok(fixed_segment().packs[0].blobs.clone())
    );
    // The lock manifest, literally (short enough to read).
    let lock_json = String::from_utf8(padded_json(&fixed_lock(), 1024)).expect("utf-8");
    assert_eq!(
        lock_json.trim_end(),
        r#"{"format":1,"operation":"prune","host":"golden-host","pid":4242,"started":"2024-01-02T03:04:05Z","refreshed":"2024-01-02T03:09:05.000001Z"}"#
    );
}

#[test]
fn envelope_fail_vectors_fail_at_their_step() {
    let root = envelope_key();
    let repo = repo_id();
    let c = snapshot_case();
    let base = read_hex(c.file);
    for (file, edits, want) in envelope_fail_cases() {
        let bytes = read_hex(&format!("envelope/{file}"));
        assert!(
            bytes == apply(&base, &edits),
            "{file} is not {} with its edits",
            c.file
        );
        assert_eq!(
            envelope::open_object(&root, &c.binding(&repo), &bytes),
            Err(want),
            "{file}"
        );
    }
    // The valid snapshot under a wrong binding or key: the commitment catches it (step 8).
    let other = id("custody golden vector other id");
    let moved = Binding {
        object: &other,
        ..c.binding(&repo)
    };
    assert_eq!(
        envelope::open_object(&root, &moved, &base),
        Err(OpenError::Commitment)
    );
    let other_repo = Binding {
        repo: &other,
        ..c.binding(&repo)
    };
    assert_eq!(
        envelope::open_object(&root, &other_repo, &base),
        Err(OpenError::Commitment)
    );
    assert_eq!(
        envelope::open_object(
            &key("custody golden vector wrong key"),
            &c.binding(&repo),
            &base
        ),
        Err(OpenError::Commitment)
    );
    // A sealed blob is not a top-level object.
    assert_eq!(
        envelope::open_object(&root, &c.binding(&repo), &base[envelope::HEADER_LEN..]),
        Err(OpenError::BadMagic)
    );
}

#[test]
fn blob_vectors_open_and_fail() {
    let root = envelope_key();
    let repo = repo_id();
    let c = data_blob_case();
    let base = read_hex("envelope/blob-data.hex");
    assert_eq!(base.len(), CHUNK.len() + envelope::BLOB_OVERHEAD);
    assert_eq!(
        envelope::open_blob(&root, &c.binding(&repo), &base),
        Ok(CHUNK.to_vec())
    );
    for (file, edits, want) in blob_fail_cases() {
        let bytes = read_hex(&format!("envelope/{file}"));
        assert!(
            bytes == apply(&base, &edits),
            "{file} is not blob-data.hex edited"
        );
        assert_eq!(
            envelope::open_blob(&root, &c.binding(&repo), &bytes),
            Err(want),
            "{file}"
        );
    }
    // A blob moved to another pack, or read as a tree blob.
    let other_pack = id("custody golden vector other id");
    let moved = Binding {
        container: &other_pack,
        ..c.binding(&repo)
    };
    assert_eq!(
        envelope::open_blob(&root, &moved, &base),
        Err(OpenError::Commitment)
    );
    let as_tree = Binding {
        kind: ObjectKind::TreeBlob,
        ..c.binding(&repo)
    };
    assert_eq!(
        envelope::open_blob(&root, &as_tree, &base),
        Err(OpenError::Commitment)
    );
}

/// §4.4 recomputed outside envelope.rs: the per-object key and commitment from HKDF with the
/// object label, the 142-byte AAD, and AES-GCM over the body.
#[test]
fn envelope_spec_recomputed() {
    let c = snapshot_case();
    let bytes = read_hex(c.file);
    let mut okm = [0u8; 64];
    kdf::hkdf(
        repo_id().as_bytes(),
        envelope_key().expose(),
        &[
            b"custody/v1/object",
            &[5],
            zero().as_bytes(),
            c.object.as_bytes(),
        ],
        &mut okm,
    );
    // Pinned by tests/testdata/vectors/independent.py.
    assert_eq!(
        hex::encode(&okm[..32]),
        "d736af9d490f51c55291953fdcab4a3d6e7fc15b8e7a6548f4b1e8becef7a2d9"
    );
    assert_eq!(
        hex::encode(&okm[32..]),
        "86c1f1ed112f224829cc877b4d697ecdff17f35fa111d176038c3a18809c8520"
    );
    assert_eq!(&bytes[52..84], &okm[32..], "stored commitment");
    let mut aad = b"custody-aad".to_vec();
    aad.extend_from_slice(&[1, 1, 5]);
    aad.extend_from_slice(repo_id().as_bytes());
    aad.extend_from_slice(zero().as_bytes());
    aad.extend_from_slice(c.object.as_bytes());
    aad.extend_from_slice(session().as_bytes());
    assert_eq!(aad.len(), 142);
    let enc = Key32::from_slice(&okm[..32]).expect("32 bytes");
    let nonce: [u8; 12] = bytes[40..52].try_into().expect("12 bytes");
    let mut body = bytes[84..].to_vec();
    let n = aead::open(&enc, &nonce, &aad, &mut body).expect("spec AAD opens the vector");
    assert!(body[..n] == c.plaintext[..]);
}

#[test]
fn pack_vector_parses_and_its_blobs_open() {
    let bytes = read_hex("pack/two-blobs.hex");
    let (a, b) = pack_blob_plaintexts();
    // §5.1: the trailer gives the sealed header's length: one 4096-byte page plus 100.
    let trailer = &bytes[bytes.len() - pack::TRAILER_LEN..];
    assert_eq!(trailer, 4196u32.to_le_bytes());
    let range = pack::header_range(bytes.len() as u64, trailer).expect("header range");
    let sealed_header = &bytes[range.start as usize..range.end as usize];
    assert_eq!(pack::header_session(sealed_header), Ok(session()));
    let key = PackKey::new(&repo_id(), &session(), &dek(), pack_id());
    let plain = key.open_header(sealed_header).expect("header opens");
    assert_eq!(plain.len(), 4096);
    assert_eq!(&plain[..12], b"CPKH\x01\x00\x00\x00\x02\x00\x00\x00");
    let entries = pack::decode_header(&plain).expect("header decodes");
    assert_eq!(
        pack::encode_header(&entries),
        plain,
        "re-encodes to the same bytes"
    );
    assert_eq!(entries.len(), 2);
    // Blobs are contiguous from offset 0 (in shuffled order), and end where the header starts.
    let mut end = 0u32;
    for e in &entries {
        assert_eq!(e.offset, end);
        end += e.length;
    }
    assert_eq!(u64::from(end), range.start);
    // K_pack(P) as pinned in kdf_vectors opens the blobs directly: PackKey derives it per §3.
    let k_pack = Key32::from_slice(&unhex32(K_PACK_HEX)).expect("32 bytes");
    let mut seen = Vec::new();
    for e in &entries {
        let (want, comp) = if e.id == hmac_id::<BlobId>(&a) {
            (&a, Compression::Zstd)
        } else {
            assert_eq!(e.id, hmac_id(&b), "unexpected blob id");
            (&b, Compression::None)
        };
        assert_eq!(e.blob_type, BlobType::Data);
        assert_eq!(e.compression, comp);
        assert_eq!(e.raw_length as usize, want.len());
        let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
        let stored = key
            .open_blob(BlobType::Data, &e.id, sealed)
            .expect("blob opens");
        assert_eq!(stored.len() + envelope::BLOB_OVERHEAD, e.length as usize);
        let binding = Binding {
            repo: &repo_id(),
            kind: ObjectKind::DataBlob,
            container: &pack_id(),
            object: &e.id,
            key_id: &session(),
        };
        assert_eq!(
            envelope::open_blob(&k_pack, &binding, sealed),
            Ok(stored.clone())
        );
        let raw = compress::decompress(e.compression, stored, e.raw_length as usize)
            .expect("decompresses");
        assert!(&raw == want, "blob plaintext");
        assert_eq!(
            hmac_id::<BlobId>(&raw),
            e.id,
            "chunk id = HMAC(K_id, plaintext)"
        );
        seen.push(e.id);
    }
    seen.sort();
    let mut want: Vec<BlobId> = vec![hmac_id(&a), hmac_id(&b)];
    want.sort();
    assert_eq!(seen, want);
    // Under another pack's key the header does not open.
    let other = PackKey::new(
        &repo_id(),
        &session(),
        &dek(),
        id("custody golden vector other id"),
    );
    assert_eq!(other.open_header(sealed_header), Err(OpenError::Commitment));

    // fail_ vectors.
    let t = read_hex("pack/fail_trailer.hex");
    assert!(t == apply(&bytes, &pack_trailer_edit()));
    let e = pack::header_range(t.len() as u64, &t[t.len() - 4..]).unwrap_err();
    assert!(e.contains("exceeds pack size"), "{e}");
    for (file, want) in [
        (
            "pack/fail_header-version.hex",
            "pack header version 2 refused",
        ),
        ("pack/fail_header-magic.hex", "not a pack header"),
        ("pack/fail_header-blob-type.hex", "unknown blob type 2"),
        ("pack/fail_header-compression.hex", "unknown compression 2"),
        ("pack/fail_header-count.hex", "pack header truncated"),
    ] {
        // A header sealed correctly (it opens) whose plaintext the decoder refuses.
        let sealed = read_hex(file);
        let plain = key
            .open_header(&sealed)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let err = pack::decode_header(&plain).unwrap_err();
        assert!(err.contains(want), "{file}: {err}");
    }
}

/// The two data blobs of the pack vector: compressible text (zstd) and random bytes (raw).
fn pack_blob_plaintexts() -> (Vec<u8>, Vec<u8>) {
    (CHUNK.repeat(64), common::random_bytes(1000, 99))
}

fn pack_trailer_edit() -> Vec<Edit> {
    // The trailer claims one byte more than the pack holds before it.
    vec![Edit::Xor(-4, 0xff), Edit::Xor(-3, 0xff)]
}

/// Header plaintexts the decoder must refuse, and the edit that makes each.
fn pack_header_fail_plaintexts() -> Vec<(&'static str, Vec<u8>)> {
    let good = pack::encode_header(&fixed_segment().packs[0].blobs);
    let edit = |at: usize, v: u8| {
        let mut b = good.clone();
        b[at] = v;
        b
    };
    vec![
        ("pack/fail_header-version.hex", edit(4, 2)),
        ("pack/fail_header-magic.hex", edit(3, b'X')),
        ("pack/fail_header-blob-type.hex", edit(12 + 32, 2)),
        ("pack/fail_header-compression.hex", edit(12 + 33, 2)),
        // 86 entries do not fit in one 4096-byte page.
        ("pack/fail_header-count.hex", edit(8, 86)),
    ]
}

#[test]
fn index_segment_vector_round_trips_exactly() {
    let bytes = read_hex("index/segment.hex");
    assert_eq!(bytes.len(), 4096);
    assert_eq!(&bytes[..12], b"CIDX\x01\x00\x00\x00\x02\x00\x00\x00");
    let seg = IndexSegment::decode(&bytes).expect("decodes");
    assert_eq!(seg, fixed_segment());
    assert!(seg.encode() == bytes, "re-encodes to the same bytes");
    // First pack: pack id, session id, blob count, then 48-byte entries (§5.2 layout).
    assert_eq!(&bytes[12..44], pack_id().as_bytes());
    assert_eq!(&bytes[44..76], session().as_bytes());
    assert_eq!(&bytes[76..80], &2u32.to_le_bytes());
    let e = &bytes[80..128];
    assert_eq!(
        &e[..32],
        id::<Id>("custody golden vector blob 1").as_bytes()
    );
    assert_eq!(&e[32..36], &[0, 1, 0, 0], "type data, zstd, reserved");
    assert_eq!(&e[36..40], &0u32.to_le_bytes());
    assert_eq!(&e[40..44], &[3, 2, 1, 0], "length, little endian");
    assert_eq!(&e[44..48], &[6, 5, 4, 0], "raw length, little endian");
    for (file, edits, want) in index_fail_cases() {
        let b = read_hex(file);
        assert!(
            b == apply(&bytes, &edits),
            "{file} is not segment.hex edited"
        );
        let err = IndexSegment::decode(&b).unwrap_err();
        assert!(err.to_string().contains(want), "{file}: {err}");
    }
}

fn index_fail_cases() -> Vec<(&'static str, Vec<Edit>, &'static str)> {
    use Edit::*;
    // Entry 0 of pack 0 starts at 80; its type byte is at 80 + 32.
    vec![
        (
            "index/fail_magic.hex",
            vec![Xor(0, 0x01)],
            "not an index segment",
        ),
        (
            "index/fail_version.hex",
            vec![Set(4, 2)],
            "index segment version 2 refused",
        ),
        (
            "index/fail_truncated.hex",
            vec![Truncate(200)],
            "index segment truncated",
        ),
        // 2^24 + 2 packs: the third "pack" read is zero padding, refused by its zero id (a
        // count of 3 is refused the same way: src/format/index.rs unit test).
        (
            "index/fail_count.hex",
            vec![Set(11, 1)],
            "index segment counts more packs than it holds",
        ),
        (
            "index/fail_padding.hex",
            vec![Xor(-1, 0x01)],
            "non-zero bytes after",
        ),
        (
            "index/fail_blob-type.hex",
            vec![Set(112, 2)],
            "unknown blob type 2",
        ),
        (
            "index/fail_compression.hex",
            vec![Set(113, 2)],
            "unknown compression 2",
        ),
    ]
}

#[test]
fn tree_vector_encodes_exactly() {
    let path = vectors().join("tree.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(tree_bytes() == bytes, "Tree::encode changed");
    let mut sorted = fixed_tree();
    sorted.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(Tree::decode(&bytes), Ok(sorted));
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    assert!(text.starts_with(r#"{"nodes":[{"name":"a-file.txt","type":"file","mode":420,"mtime_sec":1700000000,"mtime_nsec":123456789,"uid":1000,"gid":1000,"size":28,"inode":1234,"ctime_sec":1700000001,"ctime_nsec":5,"content":[""#), "{text}");
    assert!(
        text.contains(r#"{"name":{"hex":"64ff65"},"type":"file""#),
        "{text}"
    );
    assert!(text.contains(r#""target":"a-file.txt""#), "{text}");
    // Pinned by independent.py: tree id = HMAC(K_id, the exact bytes).
    assert_eq!(hmac_id::<Id>(&bytes).to_hex(), TREE_ID_HEX);
}

/// §2, §8: a new snapshot's id, bound to its manifest, recomputed here from the spec (HMAC
/// under `K_snap` of the stored JSON without its padding and with the session's digits
/// zeroed, truncated, then its tag) and pinned.
#[test]
fn snapshot_id_vector() {
    use custody::format::snapshot::bound_id;
    assert_eq!(label::SNAPSHOT_ID, b"custody/v1/snapshot-id");
    let k_snap = kdf::derive_key(repo_id().as_bytes(), &secret(), &[label::SNAPSHOT_ID]);
    let stored = snapshot_bytes();
    let text = String::from_utf8(stored.clone()).expect("utf-8");
    let session_hex = session().to_hex();
    let canonical = text.trim_end_matches(' ').replace(
        &format!("\"session\":\"{session_hex}\""),
        &format!("\"session\":\"{}\"", "0".repeat(64)),
    );
    assert_ne!(
        canonical,
        text.trim_end_matches(' '),
        "the session was found"
    );
    let head = &kdf::hmac_sha256(&k_snap, canonical.as_bytes())[..16];
    let tag = &kdf::hmac_sha256(&k_snap, head)[..16];
    let want = [head, tag].concat();
    let key = kdf::HmacKey::new(&k_snap);
    let bound = bound_id::of(&key, &stored).expect("a session field");
    assert_eq!(hex::encode(bound.as_bytes()), hex::encode(&want));
    assert_eq!(hex::encode(want), SNAPSHOT_ID_HEX);
    assert!(bound_id::is_bound(&key, &bound));
    assert!(bound_id::matches(&key, &bound, &stored));
    // Sealed again under another session: the same id.
    let resealed = text.replace(&session_hex, &"ab".repeat(32));
    assert!(bound_id::matches(&key, &bound, resealed.as_bytes()));
    // fail_: one byte of the manifest changed, or the random id of the golden envelope vector.
    let other = text.replace("golden-host", "golden-hosT");
    assert!(!bound_id::matches(&key, &bound, other.as_bytes()));
    let random: SnapshotId = id("custody golden vector snapshot id");
    assert!(!bound_id::is_bound(&key, &random));
}

const SNAPSHOT_ID_HEX: &str = "cbcb7cdc7232fc1ac8ec825009878ff23ea79f6e1f3a6f8bf1de64ad55ba6750";
const TREE_ID_HEX: &str = "bd880a433daa8aee2bd329aa5b236bb9139a5cf3f61362684ed0af847314370d";
const K_PACK_HEX: &str = "359319e690118e2a98837bb0051d4ab4577efa1abde65d57f4053f34a18e4675";

/// §3 and §12: sub-keys of a fixed `M` and `DEK_s`, a chunk id, a config MAC and chunk
/// boundaries, all recomputed independently by `tests/testdata/vectors/independent.py`.
#[test]
fn kdf_vectors() {
    assert_eq!(label::CHUNK_ID, b"custody/v1/chunk-id");
    assert_eq!(label::GEAR, b"custody/v1/chunker-gear");
    assert_eq!(label::INDEX, b"custody/v1/index");
    assert_eq!(label::CONFIG_MAC, b"custody/v1/config-mac");
    assert_eq!(label::PACK, b"custody/v1/pack");
    assert_eq!(label::OBJECT, b"custody/v1/object");
    assert_eq!(label::PARENT_CACHE, b"custody/v1/local-parent-cache");

    let r = repo_id();
    let m = secret();
    assert_eq!(
        r.to_hex(),
        "92f0e09cd5354d9303d11d2eb3da0353d08447b9870ba7ffda3dde42152368ea"
    );
    let sub = |l: &[u8]| hex::encode(kdf::derive_key(r.as_bytes(), &m, &[l]).expose());
    assert_eq!(
        sub(label::CHUNK_ID),
        "17394e48c40b41a1f022ce1e7d342454119182d5c6ad5aae8581ca5dc29620f5"
    );
    assert_eq!(
        sub(label::GEAR),
        "d8f55b70ab40734d028722f41ae04fdae89e875b50c342d395acc0fb21187e05"
    );
    assert_eq!(
        sub(label::INDEX),
        "d401b6399d81165d948c4a492395b5f06a008fee63a7f495c85956c73e6556da"
    );
    assert_eq!(
        sub(label::CONFIG_MAC),
        "868c2b21b8168ddb461febc12ffbd7c24e6d428b31b3038f69f2f27eb4491c36"
    );
    assert_eq!(
        sub(label::PARENT_CACHE),
        "575c30edde5fc26eb9de06a6b20c19f1ed0bad6a442ad0320167b36575ce2329"
    );
    let k_pack = kdf::derive_key(r.as_bytes(), &dek(), &[label::PACK, pack_id().as_bytes()]);
    assert_eq!(hex::encode(k_pack.expose()), K_PACK_HEX);

    // Chunk id of a fixed plaintext, through the reusable HMAC key as the backup uses it.
    let chunk_id = kdf::HmacKey::new(&k_id()).sign(CHUNK);
    assert_eq!(
        hex::encode(chunk_id),
        "b9621910f969bafc856f11faa0b0b977fdccae8c1b8f9a20126fa8b9c4cb7a28"
    );
    assert_eq!(kdf::hmac_sha256(&k_id(), CHUNK), chunk_id);

    // Config MAC (§9) over a fixed body: HMAC(K_mac, compact JSON of the body).
    let body = ConfigBody {
        format: 1,
        repository: r,
        created: time("2024-01-02T03:04:05Z"),
        chunker: ChunkerParams::DEFAULT,
        compression_level: 3,
        pack_size: 16 << 20,
        envelope_version: 1,
        envelope_algorithm: ENVELOPE_ALGORITHM.into(),
        secret_id: secret_id(),
    };
    let k_mac = kdf::derive_key(r.as_bytes(), &m, &[label::CONFIG_MAC]);
    assert_eq!(
        hex::encode(kdf::hmac_sha256(&k_mac, &body.mac_input())),
        "c621c9c8273a26e11a0a5b009c1b8bf408b82b14b0561d4766ef5da907802f75"
    );

    // Chunk boundaries with the gear key derived from M (src/chunker.rs pins the gear table
    // from a raw key; this pins K_gear's derivation too).
    let gear = kdf::derive_key(r.as_bytes(), &m, &[label::GEAR]);
    let params = ChunkerParams {
        min_size: 256,
        avg_size: 1024,
        max_size: 4096,
    };
    let lens = Chunker::new(&gear, params).split(&common::random_bytes(32768, 7));
    assert_eq!(
        lens,
        [
            1242, 1060, 1056, 1198, 1050, 1071, 1055, 1707, 1235, 1049, 1261, 1141, 1184, 1363,
            1072, 1268, 320, 984, 2303, 1037, 1262, 1055, 1523, 697, 978, 1585, 1515, 497
        ]
    );
}

/// §10: the canonical context bytes.
#[test]
fn context_bytes_are_canonical() {
    let ctx = context(Purpose::SessionKey, &repo_id(), &session());
    let want = format!(
        r#"{{"custody:key-id":"{}","custody:purpose":"session-key","custody:repository":"{}"}}"#,
        session().to_hex(),
        repo_id().to_hex()
    );
    assert_eq!(String::from_utf8(context_bytes(&ctx)).expect("utf-8"), want);
}

fn record_context(r: &WrappedKeyRecord) -> custody::format::wrapped::Context {
    context(r.purpose, &r.repository, &r.key_id)
}

/// Wrapped-key records, one per local wrapping scheme (§10, §11.1), that the golden owner
/// keyring opens; `fail_` records that it refuses.
#[test]
fn wrapped_key_vectors_open_with_the_golden_keyring() {
    let rt = rt();
    let (_owner_dir, owner) = open_keyring("owner-keyring");
    assert_eq!(owner.role(), KeyringRole::Owner);
    let (_writer_dir, writer) = open_keyring("writer-keyring");
    assert_eq!(writer.role(), KeyringRole::Writer);

    let meta: WrappedKeyRecord = read_json("wrapped/repository-secret.json");
    assert_eq!(meta.format, 1);
    assert_eq!(meta.purpose, Purpose::RepositorySecret);
    assert_eq!((meta.repository, meta.key_id), (repo_id(), secret_id()));
    assert_eq!(meta.wrapped.algorithm, "local-aes256gcm-v1");
    assert_eq!(meta.wrapped.ciphertext.len(), 60);
    let data: WrappedKeyRecord = read_json("wrapped/session-key.json");
    assert_eq!(data.format, 1);
    assert_eq!(data.purpose, Purpose::SessionKey);
    assert_eq!((data.repository, data.key_id), (repo_id(), session().id()));
    assert_eq!(data.wrapped.algorithm, "local-x25519-hkdf-aes256gcm-v1");
    assert_eq!(data.wrapped.ciphertext.len(), 92);

    let got = rt
        .block_on(owner.decrypt(&meta.wrapped, &record_context(&meta)))
        .expect("owner unwraps M");
    assert!(got == secret());
    let got = rt
        .block_on(owner.decrypt(&data.wrapped, &record_context(&data)))
        .expect("owner unwraps the session key");
    assert!(got == dek());
    // The writer holds the meta KEK, and only the public half of the data KEK.
    let got = rt
        .block_on(writer.decrypt(&meta.wrapped, &record_context(&meta)))
        .expect("writer unwraps M");
    assert!(got == secret());
    let e = rt
        .block_on(writer.decrypt(&data.wrapped, &record_context(&data)))
        .unwrap_err();
    assert!(matches!(e, Error::KeyDenied { .. }), "{e}");

    for (file, want, denied) in wrapped_fail_records(&meta, &data) {
        let r: WrappedKeyRecord = read_json(file);
        assert_eq!(r, want, "{file} is not a valid record with its edit");
        let e = rt
            .block_on(owner.decrypt(&r.wrapped, &record_context(&r)))
            .unwrap_err();
        if denied {
            assert!(matches!(e, Error::KeyDenied { .. }), "{file}: {e}");
        } else {
            assert!(e.is_integrity(), "{file}: {e}");
        }
    }
}

/// `fail_` wrapped-key records: each is a valid record with one edit, and whether the owner
/// keyring refuses it as denied (else as an integrity failure).
fn wrapped_fail_records(
    meta: &WrappedKeyRecord,
    data: &WrappedKeyRecord,
) -> Vec<(&'static str, WrappedKeyRecord, bool)> {
    let edit = |r: &WrappedKeyRecord, f: &dyn Fn(&mut WrappedKeyRecord)| {
        let mut r = r.clone();
        f(&mut r);
        r
    };
    let cases = vec![
        (
            "wrapped/fail_meta-tag.json",
            edit(meta, &|r| {
                *r.wrapped.ciphertext.last_mut().expect("byte") ^= 1
            }),
        ),
        (
            "wrapped/fail_meta-nonce.json",
            edit(meta, &|r| r.wrapped.ciphertext[0] ^= 1),
        ),
        (
            "wrapped/fail_meta-length.json",
            edit(meta, &|r| {
                r.wrapped.ciphertext.pop();
            }),
        ),
        (
            "wrapped/fail_meta-algorithm.json",
            edit(meta, &|r| {
                r.wrapped.algorithm = "local-x25519-hkdf-aes256gcm-v1".into()
            }),
        ),
        (
            // The context binds the purpose.
            "wrapped/fail_meta-other-purpose.json",
            edit(meta, &|r| r.purpose = Purpose::SessionKey),
        ),
        (
            "wrapped/fail_data-tag.json",
            edit(data, &|r| {
                *r.wrapped.ciphertext.last_mut().expect("byte") ^= 1
            }),
        ),
        (
            "wrapped/fail_data-ephemeral-key.json",
            edit(data, &|r| r.wrapped.ciphertext[0] ^= 2),
        ),
        (
            // A session key copied to another session's name.
            "wrapped/fail_data-other-key-id.json",
            edit(data, &|r| r.key_id = id("custody golden vector other id")),
        ),
        (
            "wrapped/fail_data-other-repository.json",
            edit(data, &|r| {
                r.repository = id("custody golden vector other id")
            }),
        ),
        (
            "wrapped/fail_unknown-kek.json",
            edit(data, &|r| {
                r.wrapped.kek = "local:00000000000000000000000000000000".into()
            }),
        ),
    ];
    // Only a KEK the keyring does not hold is denied; everything else is an integrity failure.
    cases
        .into_iter()
        .map(|(file, r)| (file, r, file == "wrapped/fail_unknown-kek.json"))
        .collect()
}

/// §11.1 recomputed outside src/keyservice/local/: argon2id over the passphrase opens the sealed KEKs, and
/// the two wrapping schemes unwrap the vectors.
#[test]
fn local_keyring_spec_recomputed() {
    let path = golden().join("owner-keyring/keyring.json");
    let ring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("keyring")).expect("JSON");
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 string"))
            .expect("base64")
    };
    assert_eq!(ring["format"], 1);
    assert_eq!(ring["role"], "owner");
    let p = &ring["passphrase"];
    assert_eq!(
        (
            p["m_cost_kib"].as_u64(),
            p["t_cost"].as_u64(),
            p["p_cost"].as_u64()
        ),
        (Some(65536), Some(3), Some(1))
    );
    let salt = b64(&p["salt"]);
    assert_eq!(salt.len(), 16);
    let params = argon2::Params::new(65536, 3, 1, Some(32)).expect("params");
    let mut kp = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(PASSPHRASE.as_bytes(), &salt, &mut kp)
        .expect("argon2id");
    let kp = Key32::from_bytes(&mut kp);
    let keks = ring["keks"].as_array().expect("keks");
    let unseal = |kek: &serde_json::Value| -> (String, Key32) {
        let kek_id = kek["id"].as_str().expect("id").to_string();
        assert_eq!(kek_id.len(), 32);
        let sealed = b64(&kek["secret"]["sealed"]);
        assert_eq!(sealed.len(), 60);
        let nonce: [u8; 12] = sealed[..12].try_into().expect("nonce");
        let mut buf = sealed[12..].to_vec();
        aead::open(&kp, &nonce, kek_id.as_bytes(), &mut buf).expect("passphrase seal opens");
        (kek_id, Key32::from_slice(&buf[..32]).expect("32 bytes"))
    };
    assert_eq!(keks[0]["purpose"], "meta");
    assert_eq!(keks[1]["purpose"], "data");
    let (meta_id, k_meta) = unseal(&keks[0]);
    let (data_id, data_secret) = unseal(&keks[1]);
    let public = b64(&keks[1]["public"]);
    let sk = x25519_dalek::StaticSecret::from(*data_secret.expose());
    assert_eq!(
        x25519_dalek::PublicKey::from(&sk).as_bytes()[..],
        public[..]
    );

    // Meta KEK: AES-GCM under HKDF("", K_meta, "custody/v1/local-wrap" || id).
    let meta: WrappedKeyRecord = read_json("wrapped/repository-secret.json");
    assert_eq!(meta.wrapped.kek, format!("local:{meta_id}"));
    let wk = kdf::derive_key(
        b"",
        &k_meta,
        &[b"custody/v1/local-wrap", meta_id.as_bytes()],
    );
    let local_aad = |kek_id: &str, r: &WrappedKeyRecord| {
        let mut a = b"custody-local-wrap-v1".to_vec();
        a.extend_from_slice(kek_id.as_bytes());
        a.extend_from_slice(&context_bytes(&record_context(r)));
        a
    };
    let ct = &meta.wrapped.ciphertext;
    let mut buf = ct[12..].to_vec();
    let n = aead::open(
        &wk,
        &ct[..12].try_into().expect("nonce"),
        &local_aad(&meta_id, &meta),
        &mut buf,
    )
    .expect("meta wrap opens per spec");
    assert!(buf[..n] == secret().expose()[..]);

    // Data KEK: E || nonce || AES-GCM under HKDF(E || public, X25519(secret, E), label || id).
    let data: WrappedKeyRecord = read_json("wrapped/session-key.json");
    assert_eq!(data.wrapped.kek, format!("local:{data_id}"));
    let ct = &data.wrapped.ciphertext;
    let e: [u8; 32] = ct[..32].try_into().expect("E");
    let shared = sk.diffie_hellman(&x25519_dalek::PublicKey::from(e));
    let mut salt = e.to_vec();
    salt.extend_from_slice(&public);
    let mut wk = [0u8; 32];
    kdf::hkdf(
        &salt,
        shared.as_bytes(),
        &[b"custody/v1/local-x25519-wrap", data_id.as_bytes()],
        &mut wk,
    );
    let wk = Key32::from_bytes(&mut wk);
    let mut buf = ct[44..].to_vec();
    let n = aead::open(
        &wk,
        &ct[32..44].try_into().expect("nonce"),
        &local_aad(&data_id, &data),
        &mut buf,
    )
    .expect("data wrap opens per spec");
    assert!(buf[..n] == dek().expose()[..]);
}

// ---------------------------------------------------------------------------------------------
// The generator: run once, commit its output.

/// Writes the vectors: `CUSTODY_WRITE_VECTORS=1 cargo test --test it vectors::write_vectors --
/// --ignored`. Writes `golden-v1/` and `vectors/` only where missing: delete one to write it
/// again (new random nonces and ids; a format change belongs in a new version's folders).
#[test]
#[ignore = "writes tests/testdata; run once with CUSTODY_WRITE_VECTORS=1"]
fn write_vectors() {
    if std::env::var(WRITE_ENV).as_deref() != Ok("1") {
        eprintln!("set {WRITE_ENV}=1 to write the vectors");
        return;
    }
    if !golden().exists() {
        write_golden_repository(&golden());
        eprintln!("wrote {}", golden().display());
    }
    if !vectors().exists() {
        let tmp = testdata().join(".vectors-new");
        let _ = std::fs::remove_dir_all(&tmp);
        write_codec_vectors(&tmp);
        std::fs::rename(&tmp, vectors()).expect("rename");
        eprintln!("wrote {}", vectors().display());
    }
}

fn write_golden_repository(out: &Path) {
    let sb = Sandbox::new();
    common::write(&sb.path("passphrase"), format!("{PASSPHRASE}\n").as_bytes());
    let owner = format!("local:{}", sb.path("owner-keyring").display());
    let pass = sb.path("passphrase").display().to_string();
    let global = [
        "--key-service",
        owner.as_str(),
        "--passphrase-file",
        pass.as_str(),
    ];
    let run = |rest: &[&str]| {
        let mut a = global.to_vec();
        a.extend_from_slice(rest);
        sb.run(&a).ok()
    };
    run(&["init", "--pack-size-mib", "1", "--chunk-avg-kib", "64"]);
    let src = sb.path("src").join("source");
    make_source(&src, 1);
    let src_s = src.to_str().expect("utf-8");
    run(&["backup", "--host", "golden-v1", "--tag", "v1", src_s]);
    // notes.txt changes; nothing else.
    std::fs::remove_file(src.join("notes.txt")).expect("rm");
    let other = sb.path("other");
    make_source(&other, 2);
    std::fs::copy(other.join("notes.txt"), src.join("notes.txt")).expect("copy");
    let m = std::fs::metadata(other.join("notes.txt")).expect("metadata");
    std::fs::set_permissions(src.join("notes.txt"), m.permissions()).expect("chmod");
    filetime::set_file_mtime(
        src.join("notes.txt"),
        filetime::FileTime::from_last_modification_time(&m),
    )
    .expect("mtime");
    run(&["backup", "--host", "golden-v1", "--tag", "v2", src_s]);
    let writer = sb.path("writer-keyring");
    run(&[
        "key",
        "export",
        "--role",
        "writer",
        "--to",
        writer.to_str().expect("utf-8"),
    ]);
    run(&["check", "--read-data"]);

    let tmp = out.with_extension("new");
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(&sb.repo(), &tmp.join("repo"));
    copy_dir(&sb.path("owner-keyring"), &tmp.join("owner-keyring"));
    copy_dir(&writer, &tmp.join("writer-keyring"));
    let size = dir_size(&tmp);
    assert!(size < 2 << 20, "golden repository is {size} bytes");
    std::fs::rename(&tmp, out).expect("rename");
}

fn write_codec_vectors(dir: &Path) {
    let root = envelope_key();
    let repo = repo_id();
    // Envelopes, one per kind; the fail_ files are edits of the snapshot vector.
    let mut base = Vec::new();
    for c in envelope_cases() {
        let sealed = envelope::seal_object(&root, &c.binding(&repo), &c.plaintext).expect("seal");
        write_hex(dir, c.file, &sealed);
        if c.kind == ObjectKind::Snapshot {
            base = sealed;
        }
    }
    for (file, edits, _) in envelope_fail_cases() {
        write_hex(dir, &format!("envelope/{file}"), &apply(&base, &edits));
    }
    let blob_case = data_blob_case();
    let blob = envelope::seal_blob(&root, &blob_case.binding(&repo), CHUNK).expect("seal");
    write_hex(dir, "envelope/blob-data.hex", &blob);
    for (file, edits, _) in blob_fail_cases() {
        write_hex(dir, &format!("envelope/{file}"), &apply(&blob, &edits));
    }

    // A pack of two data blobs.
    let key = PackKey::new(&repo_id(), &session(), &dek(), pack_id());
    let mut builder = PackBuilder::new(key.clone());
    let (a, b) = pack_blob_plaintexts();
    for plain in [&a, &b] {
        let (c, stored) = compress::compress(3, plain);
        let id: BlobId = hmac_id(plain);
        builder
            .add(BlobType::Data, id, plain.len() as u32, |out| {
                out.extend_from_slice(&stored);
                c
            })
            .expect("seal");
    }
    let packed = builder.finish().expect("pack");
    write_hex(dir, "pack/two-blobs.hex", &packed.bytes);
    write_hex(
        dir,
        "pack/fail_trailer.hex",
        &apply(&packed.bytes, &pack_trailer_edit()),
    );
    for (file, plain) in pack_header_fail_plaintexts() {
        write_hex(dir, file, &key.seal_header(&plain).expect("seal"));
    }

    // Index segment (deterministic) and its fail_ files.
    let seg = fixed_segment().encode();
    write_hex(dir, "index/segment.hex", &seg);
    for (file, edits, _) in index_fail_cases() {
        write_hex(dir, file, &apply(&seg, &edits));
    }

    // Tree (deterministic).
    write_file(&dir.join("tree.json"), &tree_bytes());

    // Wrapped-key records under the golden owner keyring.
    let rt = rt();
    let (_d, owner) = open_keyring("owner-keyring");
    let record = |purpose, key_id: Id, k: &Key32| {
        let ctx = context(purpose, &repo_id(), &key_id);
        WrappedKeyRecord {
            format: 1,
            purpose,
            repository: repo_id(),
            key_id,
            created: time("2024-01-02T03:04:05Z"),
            wrapped: rt.block_on(owner.encrypt(purpose, k, &ctx)).expect("wrap"),
            signature: None,
        }
    };
    let meta = record(Purpose::RepositorySecret, secret_id(), &secret());
    let data = record(Purpose::SessionKey, session().id(), &dek());
    let json = |r: &WrappedKeyRecord| {
        let mut v = serde_json::to_vec_pretty(r).expect("json");
        v.push(b'\n');
        v
    };
    write_file(&dir.join("wrapped/repository-secret.json"), &json(&meta));
    write_file(&dir.join("wrapped/session-key.json"), &json(&data));
    for (file, r, _) in wrapped_fail_records(&meta, &data) {
        write_file(&dir.join(file), &json(&r));
    }
}

/// `migrate` (docs/FORMAT.md §17.5) turns the golden format-1 repository into format 2: every
/// object signed by the owner, snapshots restoring as before, the old writer keyring refused
/// until a key holder enrolls a writer, and a second run with nothing to do.
#[test]
fn golden_v1_repository_migrates_to_signed_objects() {
    let g = Golden::new();
    let before: serde_json::Value = g.run("owner-keyring", &["--json", "check"]).ok().json();
    assert_eq!(before["unsigned"], true, "{before}");
    // A writer cannot vouch for the repository.
    let r = g
        .run("writer-keyring", &["migrate"])
        .code(common::EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("writer keyring"), "{}", r.stderr);
    assert!(!g.sb.repo().join("owner").exists());

    let m: serde_json::Value = g.run("owner-keyring", &["--json", "migrate"]).ok().json();
    assert_eq!(
        (m["snapshots"].as_u64(), m["already_signed"].as_bool()),
        (Some(2), Some(false)),
        "{m}"
    );
    assert!(m["segments"].as_u64().unwrap() >= 1, "{m}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g.sb.repo().join("config")).unwrap()).unwrap();
    assert_eq!(config["body"]["format"], 2);
    assert!(g.sb.repo().join("owner").exists());
    let again: serde_json::Value = g.run("owner-keyring", &["--json", "migrate"]).ok().json();
    assert_eq!(again["already_signed"], true, "{again}");

    let after: serde_json::Value = g
        .run("owner-keyring", &["--json", "check", "--read-data"])
        .ok()
        .json();
    assert_eq!(after["unsigned"], false, "{after}");
    let snaps = g.snapshots();
    assert_eq!(snaps.len(), 2);
    for (tag, version) in [("v1", 1), ("v2", 2)] {
        let id = by_tag(&snaps, tag)["id"].as_str().unwrap().to_string();
        g.restore_and_compare(&id, version, &format!("migrated-{tag}"));
    }

    // The old writer keyring holds no identity: refused, saying what it needs.
    let src = g.sb.path("new-source");
    common::write(&src.join("n.txt"), b"after the migration\n");
    let r = g
        .run("writer-keyring", &["backup", src.to_str().unwrap()])
        .code(common::EXIT_KEY_SERVICE);
    assert!(r.stderr.contains("identity"), "{}", r.stderr);
    // A key holder enrolls a writer; its backup is signed, and the owner restores it.
    g.run(
        "owner-keyring",
        &[
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            g.sb.path("enrolled").to_str().unwrap(),
        ],
    )
    .ok();
    let enrolled = format!("local:{}", g.sb.path("enrolled").display());
    g.sb.run(&["--key-service", &enrolled, "backup", src.to_str().unwrap()])
        .ok();
    let out = g.sb.path("restored-new");
    g.run(
        "owner-keyring",
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .ok();
    common::assert_same_tree(&src, &common::restored(&out, &src));
    g.run("owner-keyring", &["check", "--read-data"]).ok();
}

/// Writer provenance (docs/FORMAT.md §17): the signed-object message and trailer, the
/// key-record message, and the local keyring's owner anchor, from fixed inputs. Ed25519 is
/// deterministic, so the signature itself is pinned.
#[test]
fn provenance_vectors() {
    use custody::crypto::signing::{self, SigningKey};
    use custody::format::signature;
    let signer = SigningKey::from_seed(key("custody golden vector signer seed")).unwrap();
    let (repo, object) = (repo_id(), id::<Id>("custody golden vector signed object"));
    let body = b"signed body".to_vec();
    // The message, built from the spec's words.
    let mut want = b"custody/v2/signed-object".to_vec();
    want.push(5);
    want.extend_from_slice(repo.as_bytes());
    want.extend_from_slice(object.as_bytes());
    want.extend_from_slice(&(body.len() as u64).to_le_bytes());
    want.extend_from_slice(&body);
    assert_eq!(signature::message(5, &repo, &object, &body), want);
    let signed = signature::sign(&signer, 5, &repo, &object, body.clone());
    assert_eq!(&signed[..body.len()], &body[..]);
    assert_eq!(&signed[body.len()..body.len() + 4], b"CSG2");
    assert_eq!(
        &signed[body.len() + 4..body.len() + 36],
        signer.id().as_bytes()
    );
    assert_eq!(hex::encode(signer.id().as_bytes()), PROVENANCE_SIGNER_HEX);
    assert_eq!(
        hex::encode(&signed[body.len() + 36..]),
        PROVENANCE_SIGNATURE_HEX
    );
    assert!(signing::verify(
        &signer.id(),
        &want,
        &signed[body.len() + 36..]
    ));
    // fail_: another kind, object or body; the trailer cut off.
    assert!(signature::verify(4, &repo, &object, &signed).is_err());
    assert!(signature::verify(5, &repo, &repo, &signed).is_err());
    let mut flipped = signed.clone();
    flipped[0] ^= 1;
    assert!(signature::verify(5, &repo, &object, &flipped).is_err());
    assert_eq!(
        signature::verify(5, &repo, &object, &body),
        Err(signature::SignatureError::Unsigned)
    );

    // A wrapped-key record's signature covers R, key id, purpose and created, not the key.
    let mut rec = WrappedKeyRecord {
        format: 1,
        purpose: Purpose::SessionKey,
        repository: repo,
        key_id: session().id(),
        created: time("2024-01-02T03:04:05.5Z"),
        wrapped: custody::format::wrapped::WrappedKey {
            kek: "local:x".into(),
            algorithm: "a".into(),
            ciphertext: vec![1, 2, 3],
        },
        signature: None,
    };
    let mut m = b"custody/v2/key-record".to_vec();
    m.extend_from_slice(repo.as_bytes());
    m.extend_from_slice(session().as_bytes());
    m.extend_from_slice(b"session-key");
    m.extend_from_slice(&1_704_164_645i64.to_le_bytes());
    m.extend_from_slice(&500_000_000u32.to_le_bytes());
    assert_eq!(rec.signed_message(), m);
    rec.sign(&signer);
    assert_eq!(rec.signer(), Some(signer.id()));
    rec.wrapped.ciphertext = vec![9];
    assert_eq!(
        rec.signer(),
        Some(signer.id()),
        "a rewrap keeps the signature"
    );
    rec.created = time("2024-01-02T03:04:06Z");
    assert_eq!(rec.signer(), None, "fail_: an edited creation time");

    // The local keyring's owner anchor: HKDF(R, data KEK secret, label || data KEK id).
    let data_secret = key("custody golden vector data kek");
    let anchor = kdf::derive_key(
        repo.as_bytes(),
        &data_secret,
        &[
            b"custody/v2/owner-anchor",
            b"0123456789abcdef0123456789abcdef",
        ],
    );
    assert_eq!(hex::encode(anchor.expose()), PROVENANCE_LOCAL_ANCHOR_HEX);
}

/// Computed by `tests/testdata/vectors/independent.py` from docs/FORMAT.md §17 alone.
const PROVENANCE_SIGNER_HEX: &str =
    "781c9cd831e576f68153c97659e05c205b285f55b570d12a7815bdbd2020b5ad";
const PROVENANCE_SIGNATURE_HEX: &str = "42bdec45470063fc84f8d6a7f6271c5489d0cb537b6c7fd4b38c2c5b7fde4b62770738a03924d3d0a47ea81e574357239c3809fe5af8dcc4f3e159182552bd09";
const PROVENANCE_LOCAL_ANCHOR_HEX: &str =
    "eecfd5a0b34080a90463319b3f0b6b677c6c43842941fadb16b63b5d5cef8cf7";

/// A `migrate` killed right after it made the owner key leaves `owner` beside a format-1
/// config: snapshots still list and restore (unsigned objects stay accepted), prune waits
/// (exit 6) instead of collecting the not-yet-signed objects, and a second `migrate` finishes.
#[test]
fn an_interrupted_migration_loses_nothing_and_resumes() {
    let g = Golden::new();
    let a = g.args("owner-keyring", &["migrate"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let killed =
        g.sb.run_env(&[("CUSTODY_FAILPOINT", "migrate-after-owner")], &a);
    assert_ne!(killed.code, 0, "the failpoint must kill migrate");
    assert!(g.sb.repo().join("owner").exists());
    assert_eq!(g.snapshots().len(), 2);
    let v2 = by_tag(&g.snapshots(), "v2")["id"]
        .as_str()
        .unwrap()
        .to_string();
    g.restore_and_compare(&v2, 2, "mid-migration");
    let r = g
        .run("owner-keyring", &["prune"])
        .code(common::EXIT_CONFLICT);
    assert!(r.stderr.contains("migrate"), "{}", r.stderr);
    let m: serde_json::Value = g.run("owner-keyring", &["--json", "migrate"]).ok().json();
    assert_eq!(m["snapshots"], 2, "{m}");
    g.run("owner-keyring", &["check", "--read-data"]).ok();
    g.run("owner-keyring", &["prune"]).ok();
    g.restore_and_compare(&v2, 2, "after-migration");
}
