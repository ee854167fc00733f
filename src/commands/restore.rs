//! `restore`: a snapshot (or some paths of it) into a folder.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::progress::with_progress;
use super::{exit, human_bytes, Ctx, FilterArgs, Outcome};
use custody::error::{Error, Result};
use custody::repo::locate::locate;
use custody::repo::restore::{self, Overwrite, RestoreOptions, RestoreOutput, RestoreProgress};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest`.
    pub snapshot: String,
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
    /// Files restored at once.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    #[command(flatten)]
    pub filter: FilterArgs,
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let (id, snap) = repo.resolve_snapshot(&args.snapshot, &args.filter.filter())?;
    let index = repo.load_index()?;
    // A path that matches nothing is a mistake, not an empty restore.
    let mut includes = Vec::new();
    let (patterns, paths): (Vec<String>, Vec<String>) = args
        .includes
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
        threads: args.threads,
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
