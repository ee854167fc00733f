//! `rotate`: re-wrap every wrapped key under new KEKs (`rewrap`), or rewrite the data of
//! compromised session keys under a fresh one (`reencrypt`).

use super::progress::with_progress;
use super::{Ctx, Outcome};
use custody::error::{Error, Result};
use custody::keyservice;
use custody::repo::reencrypt::{self, Target};
use custody::repo::rewrap::{self, parse_duration, RewrapOptions};
use custody::repo::Repository;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// Re-wrap the repository secret and every session key under the KEKs of another key
    /// service (any backend to any backend). Idempotent: a rerun finishes an interrupted run.
    Rewrap {
        /// The destination key service URL.
        #[arg(long)]
        to: String,
        /// Only say what would be rewrapped.
        #[arg(long)]
        dry_run: bool,
        /// Only keys wrapped longer ago than this (e.g. 90d, 12h, 1y).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        /// Skip the pass that unwraps every rewrapped key with the destination.
        #[arg(long)]
        no_verify: bool,
    },
    /// After a session data key is compromised: rewrite the packs and snapshot manifests it
    /// protects under a fresh session key, then condemn the old packs and wrapped keys (a
    /// prune deletes them after the grace period). Resumable; safe while backups run.
    Reencrypt {
        /// A session id or unique prefix (repeatable); `key list` shows them.
        #[arg(long = "session", value_name = "ID", conflicts_with_all = ["before", "all"])]
        sessions: Vec<String>,
        /// Every session whose key was made before this time (2026-01-31 or RFC 3339).
        #[arg(long, value_name = "DATE", conflicts_with = "all")]
        before: Option<String>,
        /// Every session.
        #[arg(long)]
        all: bool,
        /// Only say what would be rewritten.
        #[arg(long)]
        dry_run: bool,
        /// Delete the old packs right away instead of by a prune after the grace period (safe
        /// while backups run: every blob in them was copied and indexed first). The old
        /// wrapped keys go with the next prune past the grace period.
        #[arg(long)]
        delete_now: bool,
    },
}

impl Cmd {
    pub fn dry_run(&self) -> bool {
        match self {
            Cmd::Rewrap { dry_run, .. } | Cmd::Reencrypt { dry_run, .. } => *dry_run,
        }
    }
}

pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<Outcome> {
    match cmd {
        Cmd::Rewrap {
            to,
            dry_run,
            older_than,
            no_verify,
        } => run_rewrap(ctx, to, *dry_run, older_than.as_deref(), *no_verify),
        Cmd::Reencrypt {
            sessions,
            before,
            all,
            dry_run,
            delete_now,
        } => run_reencrypt(
            ctx,
            sessions,
            before.as_deref(),
            *all,
            *dry_run,
            *delete_now,
        ),
    }
}

fn parse_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| Error::invalid(format!("date {s:?}: expected 2026-01-31 or RFC 3339")))
}

fn run_reencrypt(
    ctx: &Ctx,
    sessions: &[String],
    before: Option<&str>,
    all: bool,
    dry_run: bool,
    delete_now: bool,
) -> Result<Outcome> {
    let target = match (sessions.is_empty(), before, all) {
        (false, None, false) => None,
        (true, Some(d), false) => Some(Target::Before(parse_date(d)?)),
        (true, None, true) => Some(Target::All),
        _ => {
            return Err(Error::invalid(
                "say which sessions: --session ID (repeatable), --before DATE, or --all",
            ))
        }
    };
    let repo = ctx.open_repo()?;
    let target = match target {
        Some(t) => t,
        None => {
            let keys: Vec<custody::id::SessionId> = repo
                .store()
                .list(custody::store::FileKind::Key)?
                .into_iter()
                .map(|(id, _)| id.into())
                .collect();
            let mut ids = Vec::new();
            for s in sessions {
                let s = s.to_ascii_lowercase();
                let m: Vec<_> = keys.iter().filter(|k| k.to_hex().starts_with(&s)).collect();
                match m.as_slice() {
                    [one] => ids.push(**one),
                    [] => return Err(Error::NotFound(format!("session {s}"))),
                    _ => return Err(Error::invalid(format!("session prefix {s} is ambiguous"))),
                }
            }
            Target::Sessions(ids)
        }
    };
    let act = custody::repo::activity::Activity::default();
    let show = ctx.show_progress();
    let mut report = with_progress(
        show,
        || act.get(),
        || reencrypt::reencrypt(&repo, &target, dry_run, &act),
    )?;
    if let Some(mark) = report.mark.filter(|_| delete_now) {
        report.sweep = Some(with_progress(
            show,
            || act.get(),
            || custody::repo::prune::sweep_now(&repo, &mark, &act),
        )?);
    }
    ctx.emit(&report);
    Ok(Outcome::OK)
}

fn run_rewrap(
    ctx: &Ctx,
    to: &str,
    dry_run: bool,
    older_than: Option<&str>,
    no_verify: bool,
) -> Result<Outcome> {
    let created_before = older_than
        .map(parse_duration)
        .transpose()?
        .map(|d| chrono::Utc::now() - d);
    let store = ctx.store()?;
    let config = Repository::read_config(ctx.rt.handle(), &store)?;
    let from = ctx.open_key_service(&store, &config)?;
    let dest = keyservice::open(to, &ctx.key_options(to)?, ctx.rt.handle())?;
    // The destination must be inside the repository's key policy (holder replacement too).
    let copy = ctx.owner_copy(&config.body.repository);
    if let Some(p) = ctx.rt.block_on(custody::repo::policy::read_key_policy(
        store.as_ref(),
        &config.body.repository,
        Some(&copy),
    ))? {
        super::key_policy::check_service(ctx, &p, to, dest.as_ref())?;
    }
    // A key holder works out each session's authenticated age (as `reencrypt --before`
    // does); a rotator that cannot open the repository takes the records' signed `created`.
    let session_ages = match created_before {
        Some(_) => match ctx.open_repo() {
            Ok(repo) if repo.roster().is_some() => Some(repo.authenticated_session_ages()?),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("--older-than takes the records' signed creation times: the repository cannot be opened here ({e})");
                None
            }
        },
        None => None,
    };
    let opts = RewrapOptions {
        dry_run,
        created_before,
        verify: !no_verify,
        session_ages,
    };
    let quiet = ctx.quiet || ctx.json;
    let report = ctx.rt.block_on(rewrap::rewrap(
        &store,
        &config,
        from.as_ref(),
        dest.as_ref(),
        &opts,
        |line| {
            if !quiet {
                super::out_line(line);
            }
        },
    ))?;
    ctx.emit(&report);
    Ok(Outcome::OK)
}
