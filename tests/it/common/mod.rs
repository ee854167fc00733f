//! Shared helpers for the CLI integration tests: a sandbox with its own config dir, the built
//! binary, and deterministic test data.
#![allow(dead_code)]

pub mod backend;
pub mod conformance;
pub mod flaky;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INTEGRITY: i32 = 3;
pub const EXIT_KEY_SERVICE: i32 = 4;
pub const EXIT_INCOMPLETE: i32 = 5;
pub const EXIT_CONFLICT: i32 = 6;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// The JSON document on stdout, parsed into the report type the command prints.
    #[track_caller]
    pub fn report<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "not a {} ({e}): {}\nstderr: {}",
                std::any::type_name::<T>(),
                self.out(),
                self.stderr
            )
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.out(), self.stderr))
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            0,
            "stdout: {}\nstderr: {}",
            self.out(),
            self.stderr
        );
        self
    }
    #[track_caller]
    pub fn code(self, want: i32) -> Run {
        assert_eq!(
            self.code,
            want,
            "stdout: {}\nstderr: {}",
            self.out(),
            self.stderr
        );
        self
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_custody"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("CUSTODY_CONFIG_DIR", self.path("config"))
            .env("CUSTODY_REPOSITORY", self.repo())
            // Tests see the bucket itself; tests/it/roundtrip.rs covers the tree cache.
            .env("CUSTODY_CACHE_DIR", "off")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        finish(self.cmd(args).output().expect("run custody"))
    }

    /// The tree id of the folder at `path` (absolute, as backed up) in a snapshot's trees,
    /// read with `cat` as a key holder would.
    pub fn tree_at(&self, snapshot: &str, path: &Path) -> String {
        let snap = self.run(&["cat", "snapshot", snapshot]).ok().json();
        let mut tree = snap["tree"].as_str().unwrap().to_string();
        for part in path.strip_prefix("/").expect("absolute").iter() {
            let t = self.run(&["cat", "tree", &tree]).ok().json();
            let node = t["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"].as_str() == part.to_str())
                .unwrap_or_else(|| panic!("{} not in {tree}", part.to_string_lossy()));
            tree = node["subtree"].as_str().unwrap().to_string();
        }
        tree
    }

    /// Runs with extra environment (service endpoints, credentials).
    pub fn run_env<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        &self,
        env: &[(K, V)],
        args: &[&str],
    ) -> Run {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        finish(c.output().expect("run custody"))
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn custody");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait");
        writer.join().expect("writer");
        finish(out)
    }

    /// `init` with small packs so tests get several packs from little data.
    pub fn init(&self) {
        self.run(&["init", "--pack-size-mib", "1"]).ok();
    }

    /// `key export --role writer` into the sandbox folder `name` (from the key service given in
    /// `global`, e.g. `["--key-service", url]`, or the default keyring); returns the folder.
    pub fn export_writer(&self, name: &str, global: &[&str]) -> PathBuf {
        let dir = self.path(name);
        let mut args = global.to_vec();
        args.extend([
            "key",
            "export",
            "--role",
            "writer",
            "--to",
            dir.to_str().unwrap(),
        ]);
        self.run(&args).ok();
        dir
    }

    pub fn backup_json(&self, args: &[&str]) -> custody::repo::backup::BackupOutput {
        let mut a = vec!["--json", "backup"];
        a.extend_from_slice(args);
        self.run(&a).ok().report()
    }

    /// Every index entry: (pack id, blob id, offset, length).
    pub fn index_entries(&self) -> Vec<(String, String, u64, u64)> {
        let mut out = Vec::new();
        for seg in list_ids(&self.repo().join("index")) {
            let v = self.run(&["cat", "index", &seg]).ok().json();
            for p in v["packs"].as_array().unwrap() {
                for b in p["blobs"].as_array().unwrap() {
                    out.push((
                        p["pack"].as_str().unwrap().to_string(),
                        b["id"].as_str().unwrap().to_string(),
                        b["offset"].as_u64().unwrap(),
                        b["length"].as_u64().unwrap(),
                    ));
                }
            }
        }
        out
    }
}

/// True when the process died of a signal (the failpoints kill with SIGKILL).
pub fn killed(run: &Run) -> bool {
    run.code == -1
}

fn finish(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn pack_path(repo: &Path, id: &str) -> PathBuf {
    repo.join("data").join(&id[..2]).join(id)
}

/// Ids of the objects in a repository folder (`keys`, `index`, `snapshots`, or all packs).
pub fn list_ids(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if name.len() == 64 {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// Deterministic incompressible bytes (xorshift64*).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Where restore puts a source: under the target at its full path (docs/FORMAT.md §8).
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source"))
}

/// Compares two trees: names, types, contents, link targets and permission bits.
pub fn assert_same_tree(a: &Path, b: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let ma = std::fs::symlink_metadata(a).unwrap_or_else(|e| panic!("{}: {e}", a.display()));
    let mb = std::fs::symlink_metadata(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    assert_eq!(
        ma.file_type().is_dir(),
        mb.file_type().is_dir(),
        "{}",
        b.display()
    );
    assert_eq!(
        ma.file_type().is_symlink(),
        mb.file_type().is_symlink(),
        "{}",
        b.display()
    );
    if ma.file_type().is_symlink() {
        assert_eq!(
            std::fs::read_link(a).unwrap(),
            std::fs::read_link(b).unwrap()
        );
        return;
    }
    assert_eq!(
        ma.permissions().mode() & 0o7777,
        mb.permissions().mode() & 0o7777,
        "mode of {}",
        b.display()
    );
    if ma.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        assert_eq!(na, nb, "entries of {}", b.display());
        for n in na {
            assert_same_tree(&a.join(&n), &b.join(&n));
        }
    } else {
        assert_eq!(ma.len(), mb.len(), "size of {}", b.display());
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
            "content of {}",
            b.display()
        );
        assert_eq!(
            filetime::FileTime::from_last_modification_time(&ma),
            filetime::FileTime::from_last_modification_time(&mb),
            "mtime of {}",
            b.display()
        );
    }
}
