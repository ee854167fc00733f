//! The command line (DESIGN section 7): clap definitions and dispatch only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{
    audit, backup, cat, check, diff, dump, find, forget, init, key, ls, migrate, prune, repair,
    request, restore, retention, rotate, shell, snapshots, stats, tag, unlock, Ctx, Outcome,
};
use custody::error::Result;

#[derive(Debug, Parser)]
#[command(
    name = "custody",
    version,
    about = "Encrypted, deduplicating backups into buckets you do not have to trust"
)]
pub struct Cli {
    /// Repository: a folder, file:/path, or s3://bucket/prefix.
    #[arg(
        long,
        short = 'r',
        global = true,
        env = "CUSTODY_REPOSITORY",
        hide_env_values = true
    )]
    pub repo: Option<String>,
    /// Key service: local:<dir>, awskms:<key>[?meta=<key>], pkcs11:token=...;object=...?module-path=...
    /// (default: the repository's local keyring under ~/.config/custody).
    // Values hidden from --help: a pkcs11: URL may carry a PIN.
    #[arg(
        long,
        global = true,
        env = "CUSTODY_KEY_SERVICE",
        hide_env_values = true
    )]
    pub key_service: Option<String>,
    /// A writer's identity file (`key export --role writer` writes it; default: identity.json
    /// in a local: keyring folder).
    #[arg(long, global = true, env = "CUSTODY_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// A witness of the repository's history outside the custodian's reach: a folder, or
    /// s3://bucket/prefix at another provider (CUSTODY_WITNESS_PROFILE names its AWS profile).
    /// Lets a client without its own history state notice a rollback.
    #[arg(long, global = true, env = "CUSTODY_WITNESS", value_name = "URL")]
    pub witness: Option<String>,
    /// Take the repository's current state even where it is older than one seen before (an
    /// old copy of the bucket restored on purpose): the snapshots it lacks are recorded as
    /// gone, in a checkpoint the owner signs.
    #[arg(long, global = true)]
    pub accept_rollback: bool,
    /// Append every key operation to this hash-chained log (JSON lines; `custody audit
    /// verify FILE` checks it).
    #[arg(long, global = true, env = "CUSTODY_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Read the keyring passphrase from this file (or set CUSTODY_KEYRING_PASSPHRASE).
    #[arg(long, global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// Use the settings of profile NAME in $CUSTODY_CONFIG_DIR/config.toml (default
    /// ~/.config/custody/config.toml) besides its top-level ones; flags and variables win.
    #[arg(long, global = true, env = "CUSTODY_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// One JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v: audit of key operations, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository (and a local keyring when none exists).
    Init(init::Args),
    /// Back up paths, or standard input with --stdin --stdin-name NAME.
    Backup(backup::Args),
    /// List snapshots.
    Snapshots(snapshots::Args),
    /// List the files of a snapshot.
    Ls(ls::Args),
    /// Restore a snapshot into a folder.
    Restore(restore::Args),
    /// Write one file of a snapshot to standard output.
    Dump(dump::Args),
    /// Find files and folders by name or path pattern across snapshots.
    Find(find::Args),
    /// What changed between two snapshots (+ added, - removed, M modified, T type changed,
    /// U metadata only).
    Diff(diff::Args),
    /// Add, remove or replace snapshot tags (--add, --remove, --set); the owner.
    Tag(tag::Args),
    /// Verify the repository; --read-data also decrypts and verifies every chunk.
    Check(check::Args),
    /// Delete snapshots by a keep policy (--keep-daily 7 ...) or by id; --prune to collect.
    Forget(forget::Args),
    /// Garbage collection, safe while backups run: delete what a mark older than the grace
    /// period condemned, then condemn what no snapshot needs (repacking partly used packs).
    Prune(prune::Args),
    /// Remove stale prune locks (--remove-all: every lock).
    Unlock(unlock::Args),
    /// Repository or snapshot sizes.
    Stats(stats::Args),
    /// Print a decrypted object as JSON.
    #[command(subcommand)]
    Cat(cat::What),
    /// Key-service operations.
    #[command(subcommand)]
    Key(key::Cmd),
    /// Key rotation.
    #[command(subcommand)]
    Rotate(rotate::Cmd),
    /// Object Lock retention in an S3 bucket: show, set, extend.
    #[command(subcommand)]
    Retention(retention::Cmd),
    /// Sign a repository made before writer provenance (key holders; once per repository).
    Migrate(migrate::Args),
    /// Rebuild the index from the packs, or save what is intact of damaged snapshots.
    #[command(subcommand)]
    Repair(repair::Cmd),
    /// Restore requests under dual control: M of N key holders approve each restore.
    #[command(subcommand)]
    Request(request::Cmd),
    /// The local audit log of key operations (--audit-log).
    #[command(subcommand)]
    Audit(audit::Cmd),
    /// Print shell completions (e.g. `custody completions bash >
    /// /etc/bash_completion.d/custody`).
    Completions(shell::CompletionArgs),
    /// Print the man page (e.g. `custody man > /usr/local/share/man/man1/custody.1`).
    Man,
}

impl Command {
    /// What an interrupt (Ctrl-C) leaves behind, said when one ends the command. Every
    /// command keeps the repository consistent at any point it can be killed (docs/FORMAT.md
    /// §14, §14b).
    pub fn interrupted(&self) -> &'static str {
        match self {
            Command::Backup(_) => {
                "backup stopped; nothing of this run was committed and the repository is \
                 consistent (packs already uploaded are unindexed leftovers that prune removes); \
                 run the backup again"
            }
            Command::Restore(_) => {
                "restore stopped; files already restored are complete, unfinished ones were not \
                 renamed into place (hidden .NAME.custody-* files); run the restore again"
            }
            Command::Prune(_)
            | Command::Forget(_)
            | Command::Rotate(_)
            | Command::Migrate(_)
            | Command::Repair(_)
            | Command::Tag(_) => {
                "stopped; the repository is consistent (what ran is picked up by the next run); \
                 the repository lock stays until it goes stale (30 minutes) or `custody unlock \
                 --remove-all`"
            }
            _ => "stopped; the repository is unchanged",
        }
    }
}

impl Command {
    /// Whether the command only says what it would do (`--dry-run`): it records nothing,
    /// not even an accepted rollback.
    pub fn dry_run(&self) -> bool {
        match self {
            Command::Backup(a) => a.dry_run,
            Command::Restore(a) => a.dry_run,
            Command::Tag(a) => a.dry_run,
            Command::Forget(a) => a.prune_opts.dry_run,
            Command::Prune(a) => a.opts.dry_run,
            Command::Repair(c) => c.dry_run(),
            Command::Rotate(c) => c.dry_run(),
            Command::Retention(c) => c.dry_run(),
            // Listed one by one: a new command with --dry-run must be added above.
            Command::Init(_)
            | Command::Snapshots(_)
            | Command::Ls(_)
            | Command::Dump(_)
            | Command::Find(_)
            | Command::Diff(_)
            | Command::Check(_)
            | Command::Unlock(_)
            | Command::Stats(_)
            | Command::Cat(_)
            | Command::Key(_)
            | Command::Migrate(_)
            | Command::Request(_)
            | Command::Audit(_)
            | Command::Completions(_)
            | Command::Man => false,
        }
    }
}

impl Cli {
    pub fn run(&self, ctx: &Ctx) -> Result<Outcome> {
        match &self.command {
            Command::Init(a) => init::run(ctx, a),
            Command::Backup(a) => backup::run(ctx, a),
            Command::Snapshots(a) => snapshots::run(ctx, a),
            Command::Ls(a) => ls::run(ctx, a),
            Command::Restore(a) => restore::run(ctx, a),
            Command::Dump(a) => dump::run(ctx, a),
            Command::Find(a) => find::run(ctx, a),
            Command::Diff(a) => diff::run(ctx, a),
            Command::Check(a) => check::run(ctx, a),
            Command::Tag(a) => tag::run(ctx, a),
            Command::Forget(a) => forget::run(ctx, a),
            Command::Prune(a) => prune::run(ctx, a),
            Command::Stats(a) => stats::run(ctx, a),
            Command::Unlock(a) => unlock::run(ctx, a),
            Command::Repair(c) => repair::run(ctx, c),
            Command::Audit(c) => audit::run(ctx, c),
            Command::Request(c) => request::run(ctx, c),
            Command::Completions(a) => shell::completions(ctx, a),
            Command::Man => shell::man(ctx),
            Command::Cat(w) => cat::run(ctx, w),
            Command::Key(k) => key::run(ctx, k),
            Command::Rotate(r) => rotate::run(ctx, r),
            Command::Retention(c) => retention::run(ctx, c),
            Command::Migrate(a) => migrate::run(ctx, a),
        }
    }
}
