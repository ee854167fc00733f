//! One module per command. Each takes its clap arguments and the shared [`Ctx`], prints its
//! result (human text, or one JSON document with `--json`), and returns an [`Outcome`].

pub mod audit;
pub mod backup;
pub mod cat;
pub mod check;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod init;
pub mod key;
pub mod key_policy;
pub mod ls;
pub mod migrate;
mod progress;
pub mod prune;
pub mod repair;
pub mod request;
pub mod restore;
pub mod retention;
pub mod rotate;
pub mod shell;
pub mod snapshots;
pub mod stats;
pub mod tag;
pub mod unlock;

use std::sync::Arc;

use secrecy::SecretString;

use custody::error::{Error, Result};
use custody::identity::WriterIdentity;
use custody::keyservice::{self, local, KeyService, KeyServiceOptions, KeyServiceUrl};
use custody::repo::snapshots::SnapshotFilter;
use custody::repo::{default_keyring_dir, Repository, MANIFESTS, SEGMENTS, TREES};
use custody::store::{self, Store};

/// Documented exit codes (README, "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    /// Repository, store or I/O failure.
    pub const ERROR: i32 = 1;
    /// Bad arguments or usage.
    pub const USAGE: i32 = 2;
    /// Integrity failure found: tampering or corruption.
    pub const INTEGRITY: i32 = 3;
    /// Key service denied the operation or could not be reached.
    pub const KEY_SERVICE: i32 = 4;
    /// Backup saved a snapshot, but some source files could not be read.
    pub const INCOMPLETE: i32 = 5;
    /// A concurrent operation got in the way (prune during a backup, two prunes); nothing
    /// was committed: run it again.
    pub const CONFLICT: i32 = 6;
}

/// The exit code for a library error.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Integrity { .. } | Error::Untrusted { .. } | Error::Rollback(_) => exit::INTEGRITY,
        Error::KeyDenied { .. } | Error::KeyUnavailable { .. } => exit::KEY_SERVICE,
        Error::Invalid(_) => exit::USAGE,
        Error::Conflict(_) => exit::CONFLICT,
        _ => exit::ERROR,
    }
}

/// What a command ended with when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome(pub i32);

impl Outcome {
    pub const OK: Outcome = Outcome(exit::OK);
}

/// Global options and the runtime, shared by every command.
pub struct Ctx {
    pub rt: tokio::runtime::Runtime,
    pub repo: Option<String>,
    pub key_service: Option<String>,
    /// `--identity`: a writer's identity file.
    pub identity: Option<std::path::PathBuf>,
    /// `--witness`: where the history is witnessed.
    pub witness: Option<String>,
    pub accept_rollback: bool,
    /// The command runs with `--dry-run`.
    pub dry_run: bool,
    pub json: bool,
    pub quiet: bool,
    /// `-v` given this many times.
    pub verbose: u8,
    pub passphrase: Option<SecretString>,
    /// Whether a passphrase may be asked for on the terminal when none was given.
    pub can_prompt: bool,
    /// The passphrase asked for, once per run.
    pub prompted: std::sync::OnceLock<SecretString>,
    /// Settings read from the environment at start-up.
    pub env: crate::environment::Environment,
}

impl Ctx {
    pub fn store(&self) -> Result<Arc<dyn Store>> {
        let url = self.repo.as_deref().unwrap_or("");
        let s3 = match &self.env.s3 {
            Ok(s3) => s3.clone(),
            Err(e) if url.starts_with("s3://") => return Err(Error::invalid(e)),
            Err(_) => Default::default(),
        };
        store::open(url, &s3, self.rt.handle())
    }

    /// Options to open the key service at `url`: a sealed local keyring gets the passphrase
    /// given, or one asked for on the terminal.
    pub fn key_options(&self, url: &str) -> Result<KeyServiceOptions> {
        let passphrase = match KeyServiceUrl::parse(url) {
            Ok(KeyServiceUrl::Local(dir)) => self.passphrase_for(&dir)?,
            _ => self.passphrase.clone(),
        };
        Ok(KeyServiceOptions {
            passphrase,
            aws: self.env.aws.clone(),
        })
    }

    /// The passphrase of the keyring folder or identity file at `path`: the one given
    /// (`--passphrase-file`, `CUSTODY_KEYRING_PASSPHRASE`), else, when it is sealed and a
    /// person is at the terminal, one asked for (once per run), as restic does.
    pub fn passphrase_for(&self, path: &std::path::Path) -> Result<Option<SecretString>> {
        if self.passphrase.is_some() || !self.can_prompt || !local::is_sealed(path) {
            return Ok(self.passphrase.clone());
        }
        if let Some(p) = self.prompted.get() {
            return Ok(Some(p.clone()));
        }
        let p = SecretString::from(ask(&format!("passphrase for {}: ", path.display()))?.as_str());
        Ok(Some(self.prompted.get_or_init(|| p).clone()))
    }

    /// The passphrase to seal a keyring about to be made: the one given, else on a terminal
    /// one asked for twice (an empty answer leaves it unsealed, and `init` says so).
    pub fn new_passphrase(&self) -> Result<Option<SecretString>> {
        if self.passphrase.is_some() || !self.can_prompt {
            return Ok(self.passphrase.clone());
        }
        self.ask_new_passphrase()
    }

    /// Asks twice on the terminal for a new passphrase; an empty answer means none.
    pub fn ask_new_passphrase(&self) -> Result<Option<SecretString>> {
        let first = ask("passphrase for the new keyring (empty: none): ")?;
        if first.is_empty() {
            return Ok(None);
        }
        if *ask("the same passphrase again: ")? != *first {
            return Err(Error::invalid(
                "the two passphrases differ; nothing was made",
            ));
        }
        Ok(Some(SecretString::from(first.as_str())))
    }

    /// The key service URL: the one given, or the default local keyring of this repository.
    pub fn key_service_url(&self, repo_id: &custody::Id) -> String {
        match &self.key_service {
            Some(u) => u.clone(),
            None => format!(
                "local:{}",
                default_keyring_dir(&self.env.client.config_dir, repo_id).display()
            ),
        }
    }

    /// Opens the key service: the one given; else this repository's local keyring when this
    /// machine has one; else, to read only, the AWS KMS keys the repository's records name
    /// (so a key holder need not repeat a long URL; to write, it must be given).
    pub fn open_key_service(
        &self,
        store: &Arc<dyn Store>,
        config: &custody::format::config::Config,
    ) -> Result<Arc<dyn KeyService>> {
        let repo_id = &config.body.repository;
        let url = self.key_service_url(repo_id);
        let local_missing = self.key_service.is_none()
            && !local::LocalKeyring::file_path(&default_keyring_dir(
                &self.env.client.config_dir,
                repo_id,
            ))
            .exists();
        if local_missing {
            let copy = self.owner_copy(repo_id);
            let recorded = custody::repo::recorded_keys::recorded_kms_url(
                self.rt.handle(),
                store,
                config,
                Some(&copy),
            )?;
            if let Some(kms) = recorded {
                if !self.quiet {
                    err_line(format_args!(
                        "custody: no key service given and no local keyring here: reading with \
                         the AWS KMS keys the repository names ({kms}); give --key-service to write"
                    ));
                }
                let keys = keyservice::open(&kms, &self.key_options(&kms)?, self.rt.handle())?;
                return Ok(Arc::new(keyservice::read_only::ReadOnly::new(keys)));
            }
        }
        keyservice::open(&url, &self.key_options(&url)?, self.rt.handle())
    }

    /// `repo` with the local cache of manifests (`backup`, `restore`: see
    /// [`Repository::with_history_cache`]).
    pub fn with_history_cache(&self, repo: Repository) -> Repository {
        let manifests = custody::repo::SealedCache::for_repository(
            self.env.client.cache_dir.as_deref(),
            &repo.id(),
            MANIFESTS,
        );
        repo.with_history_cache(manifests)
    }

    pub fn open_repo(&self) -> Result<Repository> {
        let store = self.store()?;
        let config = Repository::read_config(self.rt.handle(), &store)?;
        let keys = self.open_key_service(&store, &config)?;
        let cache = |folder| {
            custody::repo::SealedCache::for_repository(
                self.env.client.cache_dir.as_deref(),
                &config.body.repository,
                folder,
            )
        };
        let (trees, segments) = (cache(TREES), cache(SEGMENTS));
        let identity = self.writer_identity(&config.body.repository)?;
        let config_id = config.body.repository;
        let copy = self.owner_copy(&config.body.repository);
        // Keys the store named open the repository to read only: as a reader, which signs
        // nothing and accepts what the owner (pinned, where this machine saw it) accepts.
        let repo = if keyservice::read_only::ReadOnly::is(keys.as_ref()) {
            Repository::open_for_requests(
                self.rt.handle().clone(),
                store,
                keys,
                config,
                Some(&copy),
            )?
        } else {
            Repository::open_with_owner_copy(
                self.rt.handle().clone(),
                store,
                keys,
                config,
                identity,
                Some(&copy),
            )?
        };
        let history = custody::repo::history::HistoryOptions {
            state: Some(custody::repo::history::StateFile::new(
                &self.env.client.config_dir.join("history"),
                &config_id,
            )),
            witness: self.witness()?,
            accept_rollback: self.accept_rollback,
            dry_run: self.dry_run,
        };
        Ok(repo
            .with_tree_cache(trees)
            .with_segment_cache(segments)
            .with_history(history))
    }

    /// Opens the repository for restore requests: as one key holder of a quorum may (see
    /// [`Repository::open_for_requests`]), or as the owner when the key service is that.
    pub fn open_repo_for_requests(&self) -> Result<Repository> {
        let store = self.store()?;
        let config = Repository::read_config(self.rt.handle(), &store)?;
        let keys = self.open_key_service(&store, &config)?;
        let copy = self.owner_copy(&config.body.repository);
        Repository::open_for_requests(self.rt.handle().clone(), store, keys, config, Some(&copy))
    }

    /// This client's copy of a repository's `owner` record (docs/FORMAT.md §17.2).
    pub fn owner_copy(&self, repo: &custody::Id) -> std::path::PathBuf {
        self.env
            .client
            .config_dir
            .join("owners")
            .join(format!("{}.json", repo.to_hex()))
    }

    /// Where this machine keeps the private keys of its restore requests.
    pub fn request_key_dir(&self) -> std::path::PathBuf {
        self.env.client.config_dir.join("requests")
    }

    /// The `--witness` store, if one is given.
    pub fn witness(&self) -> Result<Option<Arc<custody::repo::history::Witness>>> {
        let Some(url) = self.witness.as_deref() else {
            return Ok(None);
        };
        let mut s3 = match &self.env.s3 {
            Ok(s3) => s3.clone(),
            Err(e) if url.starts_with("s3://") => return Err(Error::invalid(e)),
            Err(_) => Default::default(),
        };
        s3.aws.profile = self.env.witness_profile.clone();
        // AWS_ENDPOINT_URL (and AWS_* credentials) in the environment take precedence over a
        // profile's: a witness in a second bucket would then be served by the repository's
        // own endpoint, whose operator may be the custodian.
        if url.starts_with("s3://")
            && self.repo.as_deref().is_some_and(|r| r.starts_with("s3://"))
            && self.env.aws_endpoint_set
        {
            tracing::warn!(
                "the witness {url} is reached at the same endpoint as the repository \
                 (AWS_ENDPOINT_URL applies to both): it detects a rollback only if that \
                 endpoint's operator is not the storage custodian; unset AWS_ENDPOINT_URL \
                 and name each endpoint in a profile, or use a local folder"
            );
        }
        let store = store::open(url, &s3, self.rt.handle())?;
        Ok(Some(Arc::new(custody::repo::history::Witness::new(
            self.rt.handle().clone(),
            store,
        ))))
    }

    /// The writer identity to sign with: `--identity`, else `identity.json` in a `local:`
    /// keyring folder when there is one (an owner keyring folder holds none).
    pub fn writer_identity(&self, repo_id: &custody::Id) -> Result<Option<WriterIdentity>> {
        let path = match &self.identity {
            Some(p) => p.clone(),
            None => match keyservice::KeyServiceUrl::parse(&self.key_service_url(repo_id))? {
                keyservice::KeyServiceUrl::Local(dir) => {
                    let p = WriterIdentity::path_in(&dir);
                    if !p.exists() {
                        return Ok(None);
                    }
                    p
                }
                // A writer's quorum file sits beside its identity (`key export`).
                keyservice::KeyServiceUrl::Quorum(file) => {
                    let p =
                        WriterIdentity::path_in(file.parent().unwrap_or(std::path::Path::new(".")));
                    if !p.exists() {
                        return Ok(None);
                    }
                    p
                }
                _ => return Ok(None),
            },
        };
        WriterIdentity::open(&path, self.passphrase_for(&path)?.as_ref()).map(Some)
    }

    /// Progress bars only on a terminal, and never with `--json` or `-q`.
    pub fn show_progress(&self) -> bool {
        !self.json && !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }

    /// Prints a typed report as one JSON document (`--json`).
    /// Keys come out sorted at every level (through `serde_json::Value`), as they always have:
    /// scripts that compare documents as text see the same bytes.
    pub fn print_report<R: serde::Serialize>(&self, report: &R) {
        let v = serde_json::to_value(report).expect("reports serialize");
        out_line(serde_json::to_string_pretty(&v).expect("JSON values serialize"));
    }

    /// Prints a command's report: one JSON document with `--json`, its human form otherwise
    /// (nothing with `-q`).
    pub fn emit<R: serde::Serialize + std::fmt::Display>(&self, report: &R) {
        if self.json {
            self.print_report(report);
        } else {
            self.say(report);
        }
    }

    /// Prints what a listing command was asked for: JSON with `--json`, text otherwise, and
    /// the text even with `-q` (it is the answer, not chatter).
    pub fn answer<R: serde::Serialize + std::fmt::Display>(&self, report: &R) {
        if self.json {
            self.emit(report);
        } else {
            let s = report.to_string();
            out_line(custody::human::terminal_safe(s.trim_end_matches('\n')));
        }
    }

    /// A line of human output (suppressed by `-q`).
    pub fn say(&self, s: impl std::fmt::Display) {
        if !self.quiet {
            let s = s.to_string();
            out_line(custody::human::terminal_safe(s.trim_end_matches('\n')));
        }
    }
}

/// Writes one line to standard error, with control characters escaped (names inside
/// messages come from snapshots, which a writer or the custodian may have made).
pub fn err_line(s: impl std::fmt::Display) {
    eprintln!("{}", custody::human::terminal_safe(&s.to_string()));
}

/// Writes one line to standard output. A reader that went away (`custody ls latest | head`)
/// ends the command quietly with exit 0, as other Unix tools do, instead of a panic.
pub fn out_line(s: impl std::fmt::Display) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{s}") {
        stdout_failed(&e);
    }
}

/// Ends the process after a failed write to standard output: quietly when the reader closed
/// the pipe, with a message (exit 1) otherwise.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    err_line(format_args!("custody: writing to standard output: {e}"));
    std::process::exit(1);
}

/// `--host/--tag/--path` filters used by `latest` and by listings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only snapshots from this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable or comma-separated: all must match).
    #[arg(long = "tag", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Only snapshots of this backed-up path (repeatable).
    #[arg(long = "path")]
    pub paths: Vec<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            host: self.host.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}

pub(crate) use custody::human::bytes as human_bytes;

/// Asks for a secret on the terminal, without echo; the answer is zeroed when dropped.
fn ask(prompt: &str) -> Result<zeroize::Zeroizing<String>> {
    rpassword::prompt_password(prompt)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| Error::io("the terminal", e))
}
