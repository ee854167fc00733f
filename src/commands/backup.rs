//! `backup`: paths or standard input into a new snapshot.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::progress::with_progress;
use super::{exit, human_bytes, Ctx, Outcome};
use custody::compress::CompressionMode;
use custody::error::{Error, Result};
use custody::repo::backup::{self, select, BackupOptions, DedupBase, Progress, Source};
use custody::repo::parent_cache::ParentCache;
use custody::repo::snapshots::SnapshotFilter;
use custody::repo::Repository;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Files and folders to back up; each becomes a top-level entry named after its last part.
    #[arg(
        required_unless_present_any = ["stdin", "files_from", "files_from_verbatim", "files_from_raw"],
        conflicts_with = "stdin"
    )]
    pub paths: Vec<PathBuf>,
    /// Leave out files and folders matching PATTERN (a glob on the absolute path; without a
    /// leading `/` it matches at any depth; repeatable). See README, "Choosing what to back up".
    #[arg(long, short = 'e', value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long, value_name = "PATTERN")]
    pub iexclude: Vec<String>,
    /// Read --exclude patterns from FILE (one per line, `#` comments, `!` takes back, $VAR).
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Read --iexclude patterns from FILE.
    #[arg(long, value_name = "FILE")]
    pub iexclude_file: Vec<PathBuf>,
    /// Leave out the contents of folders holding a valid CACHEDIR.TAG (the tag is kept).
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out folders holding a file NAME (with NAME:CONTENT, only when the file starts
    /// with CONTENT; repeatable).
    #[arg(long, value_name = "NAME[:CONTENT]")]
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than SIZE (e.g. 500M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Do not cross file-system boundaries: mount points below a source are kept, empty.
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Back up the paths listed in FILE (one per line, `#` comments, globs expanded; `-`
    /// reads standard input), besides any given as arguments.
    #[arg(long, value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Like --files-from, every line taken as it is (no comments, no globs).
    #[arg(long, value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// Like --files-from, paths separated by NUL bytes (`find -print0`).
    #[arg(long, value_name = "FILE")]
    pub files_from_raw: Vec<PathBuf>,
    /// Read and chunk everything and say what would be stored, storing nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Back up standard input as one file.
    #[arg(long, requires = "stdin_name")]
    pub stdin: bool,
    /// File name for standard input in the snapshot.
    #[arg(long)]
    pub stdin_name: Option<String>,
    /// Tag the snapshot (repeatable, or comma-separated: `--tag a,b` is two tags).
    #[arg(long = "tag", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Reuse unchanged files from this snapshot (default: latest of the same host and paths).
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file again, ignoring any parent snapshot.
    #[arg(long)]
    pub force: bool,
    /// Compression and encryption threads (default: number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Concurrent pack uploads.
    #[arg(long, default_value_t = 2)]
    pub uploads: usize,
    /// Store files of at most SIZE bytes (e.g. 4096, 16KiB; at most the smallest chunk, 64 KiB
    /// by default) with a random salt, so that whoever holds a writer keyring cannot confirm a
    /// guess of their content from the index; they are then not deduplicated with other
    /// files (docs/THREAT-MODEL.md §4). Unchanged files keep what they had.
    #[arg(long, value_name = "SIZE", env = "CUSTODY_NO_DEDUP_BELOW", value_parser = parse_size)]
    pub no_dedup_below: Option<u64>,
    /// List the packs uploaded so far every DURATION (and every --checkpoint-size), so that
    /// a rerun after an interruption reads the files again but does not upload them again.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub checkpoint_every: String,
    /// List the packs uploaded so far after every SIZE of them (e.g. 1G).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub checkpoint_size: u64,
    /// How hard to compress new data: auto (the repository's zstd level; chunks a quick probe
    /// finds incompressible are stored raw), fast (level 1), max (level 19, slow) or off.
    #[arg(long, value_name = "MODE", env = "CUSTODY_COMPRESSION", default_value = "auto",
          value_parser = parse_compression())]
    pub compression: CompressionMode,
}

/// One of [`CompressionMode::NAMES`]; clap lists them in `--help` and in its error.
fn parse_compression() -> impl clap::builder::TypedValueParser<Value = CompressionMode> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(CompressionMode::NAMES)
        .map(|s| s.parse::<CompressionMode>().unwrap_or_default())
}

/// `4096`, `16K`, `16KiB`, `1M`, `1MiB`, `2G`, `1T` (powers of 1024).
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("size {s:?}: expected e.g. 4096 or 16KiB"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1024,
        "M" | "MiB" | "m" => 1 << 20,
        "G" | "GiB" | "g" => 1 << 30,
        "T" | "TiB" | "t" => 1 << 40,
        _ => return Err(format!("size {s:?}: units are B, KiB, MiB, GiB, TiB")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn find_parent(
    repo: &Repository,
    args: &Args,
    host: &str,
    paths: &[String],
) -> Result<Option<(custody::id::SnapshotId, custody::format::snapshot::Snapshot)>> {
    if args.force || args.stdin {
        return Ok(None);
    }
    if let Some(p) = &args.parent {
        return repo
            .resolve_snapshot(p, &SnapshotFilter::default())
            .map(Some);
    }
    let unreadable = || {
        tracing::info!(
            "no parent snapshot (this key service cannot read snapshots): reading every file"
        );
        Ok(None)
    };
    if !repo.opens_snapshots()? {
        return unreadable();
    }
    let filter = SnapshotFilter {
        host: Some(host.to_string()),
        tags: Vec::new(),
        paths: paths.to_vec(),
    };
    match repo.resolve_snapshot("latest", &filter) {
        Ok((id, s)) if s.paths == paths => Ok(Some((id, s))),
        Ok(_) | Err(Error::NotFound(_)) => Ok(None),
        // A key holder served an older history than it saw stops here, as every command that
        // reads the snapshot list does (docs/FORMAT.md §18.3): nothing is written.
        Err(e @ Error::Rollback(_)) => Err(e),
        // A writer cannot read earlier snapshots: it backs up everything it is given.
        Err(e) if e.is_integrity() => {
            tracing::warn!("no parent snapshot ({e}): reading every file; run `custody check`");
            Ok(None)
        }
        Err(e) if e.is_key_service() => unreadable(),
        Err(e) => Err(e),
    }
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    // A backup reads the whole history every run: from the local cache where it can.
    let repo = ctx.with_history_cache(ctx.open_repo()?);
    let host = match &args.host {
        Some(h) => h.clone(),
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    };
    let mut paths = args.paths.clone();
    for f in &args.files_from {
        paths.extend(select::read_files_from(f, false, false)?);
    }
    for f in &args.files_from_verbatim {
        paths.extend(select::read_files_from(f, true, false)?);
    }
    for f in &args.files_from_raw {
        paths.extend(select::read_files_from(f, false, true)?);
    }
    if paths.is_empty() && !args.stdin {
        return Err(Error::invalid(
            "the --files-from lists name no paths to back up",
        ));
    }
    let mut exclude = args.exclude.clone();
    for f in &args.exclude_file {
        exclude.extend(select::read_exclude_file(f)?);
    }
    let mut iexclude = args.iexclude.clone();
    for f in &args.iexclude_file {
        iexclude.extend(select::read_exclude_file(f)?);
    }
    let select = select::SelectOptions {
        exclude,
        iexclude,
        exclude_caches: args.exclude_caches,
        exclude_if_present: args.exclude_if_present.clone(),
        exclude_larger_than: args.exclude_larger_than,
        one_file_system: args.one_file_system,
    };
    let abs_paths: Vec<String> = paths
        .iter()
        .map(|p| {
            custody::repo::backup::source_path(p)
                .map(|a| a.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    // The parent snapshot and what to deduplicate against are read at once: on a remote
    // bucket each is several round trips. A parent committed by a concurrent backup between
    // the two listings may have trees the index does not list yet: the backup then warns and
    // reads every file (a file is reused only when its chunks are in the index).
    let (base, parent) = custody::repo::in_flight::join(
        || DedupBase::load(&repo),
        || find_parent(&repo, args, &host, &abs_paths),
    );
    let (parent, base) = (parent?, base?);
    let parent_cache = if args.stdin {
        None
    } else {
        ParentCache::for_group(
            &repo,
            ctx.env.client.cache_dir.as_deref(),
            &host,
            &abs_paths,
        )
    };
    let source = if args.stdin {
        Source::Stdin {
            name: args.stdin_name.clone().unwrap_or_default(),
            reader: Box::new(std::io::stdin()),
        }
    } else {
        Source::Paths(paths)
    };
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let opts = BackupOptions {
        source,
        host,
        tags: args.tags.clone(),
        parent,
        parent_cache,
        force: args.force,
        username: ctx.env.client.username.clone(),
        workers,
        uploads: args.uploads,
        no_dedup_below: args.no_dedup_below.unwrap_or(0),
        select,
        dry_run: args.dry_run,
        checkpoints: backup::Checkpoints {
            interval: custody::repo::rewrap::parse_duration(&args.checkpoint_every)?
                .to_std()
                .map_err(|_| Error::invalid("--checkpoint-every must be positive"))?,
            bytes: args.checkpoint_size.max(1),
        },
        compression: args.compression,
        base: Some(base),
    };
    let mut progress = Progress::default();
    // `-v`: every file read because it is new or changed, as restic lists them.
    if ctx.verbose > 0 && !ctx.json && !ctx.quiet {
        progress.on_change = Some(Box::new(|change, path| {
            let what = match change {
                custody::repo::backup::FileChange::New => "new     ",
                custody::repo::backup::FileChange::Modified => "modified",
            };
            super::out_line(format_args!("{what} {}", path.display()));
        }));
    }
    let status = || {
        format!(
            "{} files, {} read, {} stored",
            progress.files.load(Ordering::Relaxed),
            human_bytes(progress.bytes.load(Ordering::Relaxed)),
            human_bytes(progress.bytes_added.load(Ordering::Relaxed))
        )
    };
    let report = with_progress(ctx.show_progress(), status, || {
        backup::backup(&repo, opts, &progress)
    })?;
    let s = &report.snapshot.summary;
    if !ctx.json {
        for (p, e) in &report.skipped {
            super::err_line(format_args!("skipped {}: {e}", custody::human::escape(p)));
        }
    }
    ctx.emit(&backup::BackupOutput::from(&report));
    if s.files_skipped > 0 {
        super::err_line(format_args!(
            "warning: {} source file(s) could not be read and are not in the snapshot",
            s.files_skipped
        ));
        return Ok(Outcome(exit::INCOMPLETE));
    }
    Ok(Outcome::OK)
}
