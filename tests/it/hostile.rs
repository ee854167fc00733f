//! A hostile writer (docs/THREAT-MODEL.md §4 and §9.8): tests that hold only the writer
//! keyring the owner exported (`key export --role writer`) and attack through the library's
//! public codecs (index segments, garbage marks, locks, packs, sealed manifests) or by editing
//! objects in the store. Each test then runs the owner's routine (`check`, `forget` by policy,
//! `prune`, and a day later `prune` again) and asserts the secure outcome: every genuine
//! snapshot the policy keeps still restores byte for byte, and `check` names the forged object
//! where the attack is detectable.
//!
//! Some of these attacks still succeed (THREAT-MODEL §9.8 lists them as open): their tests fail
//! until the fixes land, and say why. Every test runs on the local folder and on s3s-fs and
//! reports the findings of both stores together.
//!
//! Writer identities, enrollment and revocation (docs/FORMAT.md §17) are in `writers`.

mod admin;
mod bombs;
mod history;
mod index;
mod snapshots;
mod writers;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::common::backend::Repo;
use crate::common::services::sdk_config;
use crate::common::*;
use custody::compress::Compression;
use custody::format::index::{IndexSegment, PackEntries};
use custody::format::snapshot::Snapshot;
use custody::format::tree::{Node, NodeKind, Tree};
use custody::pack::{BlobEntry, BlobType, PackBuilder, PackKey};
use custody::repo::check::CheckReport;
use custody::repo::{Repository, Session};
use custody::store::{FileKind, S3Store, Store};
use custody::{BlobId, ChunkId, Id, MarkId, PackId, SegmentId, SessionId, SnapshotId, TreeId};

/// The owner's retention policy.
const POLICY: &[&str] = &[
    "--keep-daily",
    "7",
    "--keep-weekly",
    "5",
    "--keep-monthly",
    "12",
];

/// One genuine snapshot: its id, its host, the path it saved, and where its files are now.
struct Genuine {
    id: SnapshotId,
    host: &'static str,
    path: String,
    files: PathBuf,
}

impl Genuine {
    fn hex(&self) -> String {
        self.id.to_hex()
    }

    fn label(&self) -> String {
        format!("{}'s snapshot {}", self.host, self.id.short())
    }
}

/// A repository with two hosts, `alpha` and `beta`, each backed up twice: the second run
/// keeps most files of the first (deduplicated) and adds two, so once the policy forgets the
/// first run, genuine packs are partly unused. Beside it, the attacker: the repository opened
/// through the library with the writer keyring the owner exported.
struct Estate {
    /// Declared before `rt` and `r`: dropped first.
    w: Repository,
    _rt: tokio::runtime::Runtime,
    r: Repo,
    /// alpha's first and second snapshot, then beta's.
    genuine: Vec<Genuine>,
}

impl Estate {
    fn new(r: Repo) -> Estate {
        r.init();
        let mut genuine = Vec::new();
        for (n, host) in ["alpha", "beta"].into_iter().enumerate() {
            let (seed, rel) = (10 + 10 * n as u64, format!("{host}/data"));
            let live = r.source(&rel, 8, seed, Some(99));
            let first = backup_as(&r, &live, host);
            // Set aside whole (mtimes and modes intact) to compare the first snapshot with.
            let aside = r.sb.path(&format!("{host}-first"));
            std::fs::rename(&live, &aside).unwrap();
            r.source(&rel, 5, seed, Some(99));
            for i in 0..2 {
                write(
                    &live.join(format!("new{i}")),
                    &random_bytes(150_000, seed * 7 + i),
                );
            }
            let second = backup_as(&r, &live, host);
            let path = live.to_string_lossy().into_owned();
            genuine.push(Genuine {
                id: first,
                host,
                path: path.clone(),
                files: aside,
            });
            genuine.push(Genuine {
                id: second,
                host,
                path,
                files: live,
            });
        }
        let (_rt, w) = open_as_writer(&r);
        Estate { w, _rt, r, genuine }
    }

    /// The genuine snapshots the owner's policy keeps (without forgeries): each host's newest.
    fn kept(&self) -> Vec<&Genuine> {
        self.genuine.iter().skip(1).step_by(2).collect()
    }

    /// Every genuine blob of type `t` as the index lists it (a writer decrypts the whole index).
    fn genuine_listings(&self, t: BlobType) -> Vec<PackEntries> {
        let segments = self.w.load_segments().unwrap();
        let packs = segments.into_iter().flat_map(|(_, s)| s.packs);
        packs
            .filter(|p| p.blobs.iter().any(|b| b.blob_type == t))
            .collect()
    }

    fn genuine_blobs(&self, t: BlobType) -> Vec<BlobEntry> {
        let listings = self.genuine_listings(t).into_iter();
        listings.flat_map(|p| p.blobs).collect()
    }

    /// The test's clock: every garbage mark is dated a day earlier, as if the owner's next
    /// daily prune ran a day later (marks are the only clock the sweep reads). Done with the
    /// owner's keyring: only the owner signs marks, and a mark the writer re-signed would be
    /// ignored (so the sweep would never run and the test would prove nothing).
    fn a_day_passes(&self) {
        let (_rt, owner) = open_with(&self.r, None);
        for (id, mut mark) in owner.load_marks().unwrap() {
            mark.time -= chrono::Duration::hours(25);
            owner.save_object(&id, &mark).unwrap();
        }
    }
}

fn backup_as(r: &Repo, dir: &Path, host: &str) -> SnapshotId {
    let run = r.run(&["--json", "backup", dir.to_str().unwrap(), "--host", host]);
    run.ok()
        .report::<custody::repo::backup::BackupOutput>()
        .snapshot_id
}

/// The owner exports a writer keyring; the attacker opens the repository with it, on the
/// store the CLI uses (the local folder, or the `s3://` URL of `Repo::s3()`).
fn open_as_writer(r: &Repo) -> (tokio::runtime::Runtime, Repository) {
    let keyring = r.sb.path("writer-keyring");
    r.run(&[
        "key",
        "export",
        "--role",
        "writer",
        "--to",
        keyring.to_str().unwrap(),
    ])
    .ok();
    open_with(r, Some(&keyring))
}

/// Opens the repository through the library with the writer keyring (and identity) in
/// `writer`, or with the owner's default keyring when `None`.
fn open_with(r: &Repo, writer: Option<&Path>) -> (tokio::runtime::Runtime, Repository) {
    use custody::keyservice::{self, KeyServiceOptions};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = |name: &str| {
        let found = r.env().iter().find(|(k, _)| *k == name);
        found.map(|(_, v)| v.clone())
    };
    let store: Arc<dyn Store> = match env("CUSTODY_REPOSITORY") {
        Some(url) => {
            let _in = rt.enter();
            let (endpoint, key, secret) = (
                env("AWS_ENDPOINT_URL").unwrap(),
                env("AWS_ACCESS_KEY_ID").unwrap(),
                env("AWS_SECRET_ACCESS_KEY").unwrap(),
            );
            let conf = sdk_config(&endpoint, &key, &secret);
            Arc::new(S3Store::with_config(&url, &conf, &Default::default()).unwrap())
        }
        None => {
            let path = r.sb.repo();
            custody::store::open(path.to_str().unwrap(), &Default::default(), rt.handle()).unwrap()
        }
    };
    let config = Repository::read_config(rt.handle(), &store).unwrap();
    let keyring = match writer {
        Some(dir) => dir.to_path_buf(),
        None => custody::repo::default_keyring_dir(&r.sb.path("config"), &config.body.repository),
    };
    let url = format!("local:{}", keyring.display());
    let keys = keyservice::open(&url, &KeyServiceOptions::default(), rt.handle()).unwrap();
    let identity = writer.map(|dir| {
        let path = custody::identity::WriterIdentity::path_in(dir);
        custody::identity::WriterIdentity::open(&path, None).unwrap()
    });
    let w = Repository::open(rt.handle().clone(), store, keys, config, identity).unwrap();
    (rt, w)
}

/// What went wrong in one test, on every store: a test reports all of it at once.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

/// Runs `attack` on a fresh estate on the local folder, then on s3s-fs (when installed), and
/// fails with the findings of both (`common::backend::both` would stop at the first store).
fn on_both(attack: fn(&Estate, &mut Findings)) {
    type Open = fn() -> Option<Repo>;
    let stores: [(&str, Open); 2] = [("local", || Some(Repo::local())), ("s3s-fs", Repo::s3)];
    let mut all = Vec::new();
    for (store, make) in stores {
        let Some(r) = make() else { continue };
        let mut f = Findings::default();
        attack(&Estate::new(r), &mut f);
        all.extend(f.0.into_iter().map(|m| format!("[{store}] {m}")));
    }
    assert!(
        all.is_empty(),
        "{} finding(s):\n- {}",
        all.len(),
        all.join("\n- ")
    );
}

/// The start of a command's stderr, on one line, for a finding.
fn brief(stderr: &str) -> String {
    let s: String = stderr.trim().chars().take(400).collect();
    s.replace('\n', " | ")
}

/// The owner's routine: `forget` with each policy, `prune`, then a day later `prune` again.
/// Each prune must exit with one of `prune_ok`.
/// The owner's routine: `forget` with each policy (exit 0, or 3 where `forget_refuses`: a
/// manifest that does not open is kept and named, and the rest is done), then two prunes a
/// day apart, each exiting with one of `prune_ok`.
fn owner_routine(
    e: &Estate,
    policies: &[&[&str]],
    forget_refuses: bool,
    prune_ok: &[i32],
    f: &mut Findings,
) {
    for policy in policies {
        let run = e.r.run(&[&["forget"][..], policy].concat());
        let want = if forget_refuses {
            EXIT_INTEGRITY
        } else {
            EXIT_OK
        };
        f.expect(run.code == want, || {
            let p = policy.join(" ");
            format!("forget {p} exited {}: {}", run.code, brief(&run.stderr))
        });
    }
    for day in 0..2 {
        if day > 0 {
            e.a_day_passes();
        }
        let run = e.r.run(&["--json", "prune"]);
        // Shown with a failing test's output: what each prune did.
        let report = serde_json::from_slice::<serde_json::Value>(&run.stdout);
        let report = report.map(|v| v.to_string()).unwrap_or_default();
        eprintln!(
            "prune (day {day}) exited {}: {report} {}",
            run.code, run.stderr
        );
        f.expect(prune_ok.contains(&run.code), || {
            format!(
                "prune (day {day}) exited {}: {}",
                run.code,
                brief(&run.stderr)
            )
        });
    }
}

/// Restores each of `which` and compares it with its files; `when` labels the findings.
fn restores(e: &Estate, which: &[&Genuine], when: &str, f: &mut Findings) {
    for g in which {
        let out = e.r.sb.path(&format!("restored-{when}-{}", g.id.short()));
        let run =
            e.r.run(&["restore", &g.hex(), "--target", out.to_str().unwrap()]);
        if run.code != EXIT_OK {
            let why = brief(&run.stderr);
            f.0.push(format!(
                "{when} the routine: restore of {} exited {}: {why}",
                g.label(),
                run.code
            ));
            continue;
        }
        let same =
            std::panic::catch_unwind(|| assert_same_tree(&g.files, &restored(&out, &g.files)));
        f.expect(same.is_ok(), || {
            format!("{when} the routine: {} restored other files", g.label())
        });
    }
}

/// `check --read-data` must exit 3 and name one of `forged` in an integrity problem.
fn check_names(e: &Estate, forged: &[Id], f: &mut Findings) {
    let run = e.r.run(&["--json", "check", "--read-data"]);
    let report: Option<CheckReport> = serde_json::from_slice(&run.stdout).ok();
    let problems = report.map(|r| r.problems).unwrap_or_default();
    let named = problems
        .iter()
        .any(|p| p.integrity && forged.iter().any(|id| p.object.contains(&id.to_hex())));
    f.expect(run.code == EXIT_INTEGRITY && named, || {
        let forged: Vec<String> = forged.iter().map(|id| id.short()).collect();
        let seen: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message))
            .collect();
        format!(
            "check exited {} without naming the forged {forged:?}; problems: {seen:?} {}",
            run.code,
            brief(&run.stderr)
        )
    });
}

/// Data chunks of the files in `dir`, computed as any writer can (the repository's chunker
/// and id key).
fn chunk_ids(w: &Repository, dir: &Path) -> HashSet<BlobId> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let mut rest = &data[..];
        for n in w.chunker().split(&data) {
            out.insert(BlobId(w.chunk_id(&rest[..n])));
            rest = &rest[n..];
        }
    }
    out
}

/// Tells data loss from a misled reader: every data chunk of the kept snapshots must still
/// be listed in a stored pack other than the attacker's (`attacker`).
fn data_survives(e: &Estate, attacker: &[Id], f: &mut Findings) {
    let listed = e.w.store().list(FileKind::Pack).unwrap();
    let stored: HashSet<PackId> = listed.into_iter().map(|(id, _)| id.into()).collect();
    let segments = match e.w.load_segments() {
        Ok(s) => s,
        Err(err) => return f.0.push(format!("the index no longer loads: {err}")),
    };
    let held: HashSet<BlobId> = segments
        .iter()
        .flat_map(|(_, seg)| &seg.packs)
        .filter(|p| stored.contains(&p.pack) && !attacker.contains(&p.pack.id()))
        .flat_map(|p| p.blobs.iter().map(|b| b.id))
        .collect();
    for g in e.kept() {
        let chunks = chunk_ids(&e.w, &g.files);
        let lost = chunks.iter().filter(|c| !held.contains(c)).count();
        f.expect(lost == 0, || {
            format!(
                "DATA LOST: {lost} of {} chunks of {} are in no stored genuine pack",
                chunks.len(),
                g.label()
            )
        });
    }
}

/// An id that sorts before (`first`) or after every random id: readers and prune take a
/// blob's first listing in name order, so the attacker picks its segment's place.
fn sorting_id(first: bool, n: u8) -> Id {
    let mut b = [if first { 0 } else { 0xff }; 32];
    b[31] = n;
    Id(b)
}

/// Seals `blobs` (plaintexts of type `t`) into a pack of the attacker's session and uploads
/// it, as a backup would; returns the pack's true listing.
fn upload_pack(w: &Repository, s: &Session, t: BlobType, blobs: &[Vec<u8>]) -> PackEntries {
    upload_sealed(w, s.new_pack_key().unwrap(), t, blobs)
}

/// [`upload_pack`] under `key`, which names the pack (and may name an existing one).
fn upload_sealed(w: &Repository, key: PackKey, t: BlobType, blobs: &[Vec<u8>]) -> PackEntries {
    let mut pack = PackBuilder::new(key.clone());
    for plain in blobs {
        let id = BlobId(w.chunk_id(plain));
        pack.add(t, id, plain.len() as u32, |out| {
            out.extend_from_slice(plain);
            Compression::None
        })
        .unwrap();
    }
    let p = pack.finish().unwrap();
    w.store()
        .put(FileKind::Pack, &p.id, p.bytes.into())
        .unwrap();
    PackEntries {
        pack: p.id,
        session: p.session,
        blobs: p.entries,
    }
}

/// A tree node for a regular file of the attacker's making.
fn file_node(name: &[u8], size: u64, content: Vec<ChunkId>) -> Node {
    Node {
        name: custody::format::name::RawName(name.to_vec()),
        kind: NodeKind::File,
        mode: 0o644,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 0,
        uid: 0,
        gid: 0,
        size,
        inode: 0,
        ctime_sec: 0,
        ctime_nsec: 0,
        content,
        subtree: None,
        target: None,
        salt: None,
        xattrs: Vec::new(),
        rdev: 0,
        links: 0,
        device: 0,
    }
}

/// A folder of the attacker's own: one file, in packs of its session, indexed by a segment
/// as a backup's would be. Returns the folder's tree id.
fn plant_tree(w: &Repository, s: &Session) -> TreeId {
    let junk = b"written by the attacker\n".repeat(100);
    let data = upload_pack(w, s, BlobType::Data, std::slice::from_ref(&junk));
    let mut tree = Tree {
        nodes: vec![file_node(
            b"pwned.txt",
            junk.len() as u64,
            vec![ChunkId(w.chunk_id(&junk))],
        )],
    };
    let bytes = tree.encode();
    let trees = upload_pack(w, s, BlobType::Tree, std::slice::from_ref(&bytes));
    let seg = IndexSegment {
        packs: vec![data, trees],
        provisional: false,
    };
    w.save_index_segment(&seg).unwrap();
    TreeId(w.chunk_id(&bytes))
}

/// A manifest sealed by the attacker's session `s`, claiming `host` and `path`.
fn manifest(s: &Session, host: &str, path: &str, time: DateTime<Utc>, tree: TreeId) -> Snapshot {
    Snapshot {
        format: 1,
        time,
        host: host.into(),
        username: String::new(),
        paths: vec![path.into()],
        tags: vec![],
        tree,
        session: s.id,
        parent: None,
        summary: Default::default(),
        program: format!("custody {}", env!("CARGO_PKG_VERSION")),
        writer: None,
        chain: None,
        repaired: None,
        layout: Default::default(),
        original: None,
    }
}
