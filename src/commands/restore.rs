//! `restore`: a snapshot (or some paths of it) into a folder.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::progress::with_progress;
use super::{exit, human_bytes, Ctx, FilterArgs, Outcome};
use custody::error::{Error, Result};
use custody::repo::locate::locate;
use custody::repo::restore::{self, Overwrite, RestoreOptions, RestoreOutput, RestoreProgress};
use custody::repo::Repository;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest` (with --request: the request's).
    #[arg(required_unless_present = "request")]
    pub snapshot: Option<String>,
    /// Restore what an approved restore request covers, with the keys its approvals released
    /// (`custody request`); exits 4 saying who approved while too few have.
    #[arg(long)]
    pub request: Option<String>,
    /// Folder to restore into (created if missing); each source goes under it at its full
    /// path (`/srv/data` to `TARGET/srv/data`).
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Restore only this path of the snapshot (as on its machine, `/srv/data/x`), or, with
    /// `*`, `?` or `[`, what matches this pattern (repeatable).
    #[arg(long = "include", short = 'i')]
    pub includes: Vec<String>,
    /// Restore only what matches this pattern, ignoring case (repeatable).
    #[arg(long = "iinclude")]
    pub iincludes: Vec<String>,
    /// Leave out what matches this pattern, and all it holds (repeatable).
    #[arg(long = "exclude", short = 'e')]
    pub excludes: Vec<String>,
    /// Leave out what matches this pattern, ignoring case (repeatable).
    #[arg(long = "iexclude")]
    pub iexcludes: Vec<String>,
    /// What to do with a file already at a restored path: always (replace it),
    /// if-changed (keep it if size and time match), if-newer (replace it only with a newer
    /// one), never.
    #[arg(long, default_value = "always", value_parser = clap::value_parser!(Overwrite))]
    pub overwrite: Overwrite,
    /// Remove files and folders in the target that the snapshot does not have (only inside
    /// the restored sources, never in the folders above them).
    #[arg(long)]
    pub delete: bool,
    /// Read every restored file back and compare it with the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// Say what would be restored (and deleted); change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Pack reads at once, and files checked at once by --verify, per batch of up to 32,768
    /// files; a larger restore runs two batches at once, so up to twice as many [default: 8
    /// on S3, where each read waits a round trip; 4 on a local folder].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Opens the repository with the session keys an approved request released, and says which
/// snapshot and paths it covers. Refuses (exit 4) a request that is not approved, is denied
/// or expired (its private key is then destroyed).
fn open_by_request(
    ctx: &Ctx,
    args: &Args,
    spec: &str,
) -> Result<(Repository, String, Vec<String>)> {
    let repo = ctx.open_repo_for_requests()?;
    let id = repo.resolve_request(spec)?;
    let status = repo.request_status(&id)?;
    let refused = |reason: String| Error::KeyDenied {
        key: format!("request {}", id.short()),
        operation: "restore".into(),
        reason,
    };
    if status.expired {
        let destroyed = repo.destroy_request_secret(&id, &ctx.request_key_dir())?;
        return Err(refused(format!(
            "expired at {}{}",
            custody::human::local_time(status.request.expires),
            if destroyed {
                "; its private key was destroyed"
            } else {
                ""
            }
        )));
    }
    if !status.denied_by.is_empty() {
        return Err(refused(format!(
            "denied by {}",
            status.denied_by.join(", ")
        )));
    }
    if !status.approved() {
        return Err(refused(format!(
            "{} of {} approvals ({}); waiting for holders among {}",
            status.approved_by.len(),
            status.required,
            if status.approved_by.is_empty() {
                "none".into()
            } else {
                status.approved_by.join(", ")
            },
            status
                .holders
                .iter()
                .filter(|h| !status.approved_by.contains(h))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let wanted = status.request.snapshot.to_hex();
    if let Some(s) = &args.snapshot {
        if !wanted.starts_with(&s.to_ascii_lowercase()) {
            return Err(Error::invalid(format!(
                "request {} covers snapshot {}, not {s}",
                id.short(),
                status.request.snapshot.short()
            )));
        }
    }
    let secret = repo.request_secret(&id, &ctx.request_key_dir())?;
    let keys = repo.released_keys(&status, &secret)?;
    repo.use_session_keys(keys);
    let mut includes = status.request.include.clone();
    if !includes.is_empty() && !args.includes.is_empty() {
        // Narrowing a request is fine; widening it is not.
        if let Some(extra) = args.includes.iter().find(|i| {
            !includes.iter().any(|r| {
                let r = r.trim_end_matches('/');
                !restore::select::is_pattern(i)
                    && (i.as_str() == r || i.starts_with(&format!("{r}/")))
            })
        }) {
            return Err(Error::invalid(format!(
                "--include {extra} is outside the request's paths ({})",
                includes.join(", ")
            )));
        }
    }
    if !args.includes.is_empty() {
        includes = args.includes.clone();
    }
    Ok((repo, wanted, includes))
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let (repo, spec, wanted_includes) = match &args.request {
        Some(r) => open_by_request(ctx, args, r)?,
        None => (
            ctx.with_history_cache(ctx.open_repo()?),
            args.snapshot.clone().unwrap_or_default(),
            args.includes.clone(),
        ),
    };
    let (index, id, snap) = restore::start(&repo, &spec, &args.filter.filter())?;
    // A path that matches nothing is a mistake, not an empty restore.
    let mut includes = Vec::new();
    let (patterns, paths): (Vec<String>, Vec<String>) = wanted_includes
        .iter()
        .cloned()
        .partition(|s| restore::select::is_pattern(s));
    for inc in &paths {
        match locate(&repo, &index, &snap, inc) {
            Err(Error::NotFound(what)) => {
                return Err(Error::invalid(format!(
                    "--include: no such path in snapshot {}: {what}",
                    id.short()
                )))
            }
            r => includes.push(r?.rel),
        }
    }
    let opts = RestoreOptions {
        target: args.target.clone(),
        includes,
        include_patterns: (patterns, args.iincludes.clone()),
        exclude_patterns: (args.excludes.clone(), args.iexcludes.clone()),
        overwrite: args.overwrite,
        delete: args.delete,
        verify: args.verify,
        dry_run: args.dry_run,
        threads: args.threads.unwrap_or(match repo.store().inner().remote() {
            true => 8,
            false => 4,
        }),
    };
    let progress = RestoreProgress::default();
    let status = || {
        format!(
            "{} files, {} restored",
            progress.files.load(Ordering::Relaxed),
            human_bytes(progress.bytes.load(Ordering::Relaxed))
        )
    };
    let start = std::time::Instant::now();
    let report = with_progress(ctx.show_progress(), status, || {
        restore::restore(&repo, &index, &snap, &opts, &progress)
    })?;
    let secs = start.elapsed().as_secs_f64();
    for (p, e) in &report.failed {
        super::err_line(format_args!(
            "not restored: {}: {e}",
            custody::human::escape(p)
        ));
    }
    let mut out = RestoreOutput::new(id, args.target.clone(), &report, secs);
    out.dry_run = args.dry_run;
    ctx.emit(&out);
    if report.failed.iter().any(|(_, e)| e.is_integrity()) {
        super::err_line(format_args!(
            "integrity failure: {} path(s) could not be restored intact",
            report.failed.len()
        ));
        return Ok(Outcome(exit::INTEGRITY));
    }
    if let Some((_, e)) = report.failed.iter().find(|(_, e)| e.is_key_service()) {
        super::err_line(format_args!("{e}"));
        return Ok(Outcome(exit::KEY_SERVICE));
    }
    if !report.failed.is_empty() {
        return Ok(Outcome(exit::ERROR));
    }
    Ok(Outcome::OK)
}
