//! One repository on one backend (local folder or s3s-fs), driven through the CLI, for tests
//! that run the same scenario on every store.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::services::{available, S3sFs};
use super::*;

/// A repository on one backend, with the sandbox that drives it.
pub struct Repo {
    pub sb: Sandbox,
    env: Vec<(&'static str, String)>,
    _server: Option<S3sFs>,
}

impl Repo {
    /// Removes every lock, as an operator would after making sure the run holding it died.
    pub fn remove_locks(&self) {
        let out = self.run(&["unlock", "--remove-all"]).ok();
        assert!(out.out().contains("removed 1"), "{}", out.out());
    }

    /// The environment the CLI runs with (an `s3://` repository URL, the endpoint and its
    /// credentials; empty for the local folder), for tests that open the store in-process.
    pub fn env(&self) -> &[(&'static str, String)] {
        &self.env
    }

    pub fn local() -> Repo {
        Repo {
            sb: Sandbox::new(),
            env: vec![],
            _server: None,
        }
    }

    pub fn s3() -> Option<Repo> {
        if !available("s3s-fs") {
            return None;
        }
        let s = S3sFs::start();
        let mut env = s.env();
        env.push(("CUSTODY_REPOSITORY", "s3://gc-bucket/repo".into()));
        Some(Repo {
            sb: Sandbox::new(),
            env,
            _server: Some(s),
        })
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.sb.run_env(&self.env, args)
    }

    /// Runs with extra environment on top of the backend's.
    pub fn run_with(&self, extra: &[(&'static str, String)], args: &[&str]) -> Run {
        let mut env = self.env.clone();
        env.extend(extra.iter().cloned());
        self.sb.run_env(&env, args)
    }

    /// The folder that holds the repository's objects: the local repository, or the
    /// s3s-fs server's folder for its bucket (the custodian edits objects here).
    pub fn store_dir(&self) -> PathBuf {
        match &self._server {
            None => self.sb.repo(),
            Some(s) => s.dir.path().join("gc-bucket").join("repo"),
        }
    }

    /// Whether this repository is on an S3 server.
    pub fn is_s3(&self) -> bool {
        self._server.is_some()
    }

    /// The S3 server, for tests that need a second bucket on it.
    pub fn server(&self) -> Option<&S3sFs> {
        self._server.as_ref()
    }

    pub fn run_fail(&self, point: &str, args: &[&str]) -> Run {
        let mut env = self.env.clone();
        env.push(("CUSTODY_FAILPOINT", point.into()));
        self.sb.run_env(&env, args)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.sb.cmd(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    pub fn init(&self) {
        self.run(&["init", "--pack-size-mib", "1"]).ok();
    }

    /// A source folder `name` with `files` files of random sizes, plus `shared` (the same
    /// bytes in every folder made with the same `shared` seed).
    pub fn source(&self, name: &str, files: usize, seed: u64, shared: Option<u64>) -> PathBuf {
        let dir = self.sb.path(name);
        for i in 0..files {
            let len = 20_000 + (random_bytes(4, seed * 1000 + i as u64)[0] as usize) * 3000;
            write(
                &dir.join(format!("f{i:03}")),
                &random_bytes(len, seed * 1000 + i as u64),
            );
        }
        if let Some(s) = shared {
            write(&dir.join("shared.bin"), &random_bytes(3 << 20, s));
        }
        dir
    }

    pub fn backup(&self, dir: &Path) -> String {
        let v: custody::repo::backup::BackupOutput = self
            .run(&["--json", "backup", dir.to_str().unwrap()])
            .ok()
            .report();
        v.snapshot_id.to_hex()
    }

    pub fn check(&self) -> custody::repo::check::CheckReport {
        self.run(&["--json", "check", "--read-data"]).ok().report()
    }

    pub fn stats(&self) -> custody::repo::stats::RepositoryStats {
        self.run(&["--json", "stats"]).ok().report()
    }

    /// Restores every snapshot and compares it with its source folder (sources are never
    /// changed after their backup in these tests). Returns how many there were.
    pub fn restore_all(&self) -> usize {
        let snaps: custody::repo::snapshots::SnapshotTable =
            self.run(&["--json", "snapshots"]).ok().report();
        for s in &snaps.0 {
            let id = s.id.to_hex();
            let src = PathBuf::from(&s.paths[0]);
            let out = self.sb.path(&format!("restored/{id}"));
            self.run(&["restore", &id, "--target", out.to_str().unwrap()])
                .ok();
            assert_same_tree(&src, &restored(&out, &src));
        }
        snaps.0.len()
    }
}

/// Runs `body` on the local store and on s3s-fs.
pub fn both(body: fn(&Repo)) {
    body(&Repo::local());
    if let Some(r) = Repo::s3() {
        body(&r);
    }
}
