//! `restore`: a snapshot (or some paths of it) into a folder.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::progress::with_progress;
use super::{exit, human_bytes, Ctx, FilterArgs, Outcome};
use custody::error::{Error, Result};
use custody::repo::restore::{self, RestoreOptions, RestoreOutput, RestoreProgress};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest`.
    pub snapshot: String,
    /// Folder to restore into (created if missing).
    #[arg(long)]
    pub target: PathBuf,
    /// Restore only this path of the snapshot (repeatable).
    #[arg(long = "include")]
    pub includes: Vec<String>,
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
    for inc in &args.includes {
        match restore::find_node(&repo, &index, &snap.tree, inc) {
            Err(Error::NotFound(_)) => {
                return Err(Error::invalid(format!(
                    "--include {inc}: no such path in snapshot {} (paths start at the \
                     snapshot's root, e.g. {})",
                    id.short(),
                    snap.paths
                        .first()
                        .and_then(|p| p.rsplit('/').next())
                        .unwrap_or("name")
                )))
            }
            r => {
                r?;
            }
        }
    }
    let opts = RestoreOptions {
        target: args.target.clone(),
        includes: args.includes.clone(),
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
    ctx.emit(&RestoreOutput::new(id, args.target.clone(), &report, secs));
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
