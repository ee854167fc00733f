//! `retention`: Object Lock settings of a repository in an S3 bucket (docs/FORMAT.md §21).

use super::{Ctx, Outcome};
use custody::error::{Error, Result};
use custody::format::retention::RetentionRecord;
use custody::store::object_lock::LockMode;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// The retention every object gets, and the bucket's own settings.
    Show,
    /// Change the retention (the owner): new objects get it, and so does the bucket's
    /// default. Existing objects keep theirs until `retention extend`.
    Set(SetArgs),
    /// Extend the retention of everything the snapshots of the last N days need, so each
    /// stays restorable from locked objects alone (a key holder; safe from a scheduler).
    Extend {
        /// Only say what would be extended.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// Every object is locked for at least this many days.
    #[arg(long, value_name = "N")]
    pub days: u32,
    /// governance (a role with s3:BypassGovernanceRetention can still delete) or compliance
    /// (no one can until the date).
    #[arg(long, value_name = "MODE", default_value = "governance")]
    pub mode: String,
}

#[derive(serde::Serialize)]
struct Shown {
    retention: Option<RetentionRecord>,
    bucket_versioning: bool,
    bucket_object_lock: bool,
    bucket_default: Option<(LockMode, u32)>,
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.retention {
            Some(r) if r.days == 0 => writeln!(
                f,
                "retention: none (no Object Lock); conditional writes: {}",
                if r.conditional_writes {
                    "honoured by the server"
                } else {
                    "ignored by the server"
                }
            )?,
            Some(r) => writeln!(
                f,
                "retention: {} for {} day(s) on every object (set {}); conditional writes: {}",
                r.mode.as_str(),
                r.days,
                custody::human::local_time(r.set),
                if r.conditional_writes {
                    "honoured by the server"
                } else {
                    "ignored by the server (versioning and the signed history detect overwrites)"
                }
            )?,
            None => writeln!(f, "retention: none set")?,
        }
        write!(
            f,
            "bucket: versioning {}, Object Lock {}{}",
            if self.bucket_versioning { "on" } else { "off" },
            if self.bucket_object_lock { "on" } else { "off" },
            self.bucket_default
                .map(|(m, d)| format!(", default retention {} for {d} day(s)", m.as_str()))
                .unwrap_or_default()
        )
    }
}

impl Cmd {
    pub fn dry_run(&self) -> bool {
        matches!(self, Cmd::Extend { dry_run: true })
    }
}

pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let lock = repo.store().inner().object_lock().ok_or_else(|| {
        Error::invalid(format!(
            "{} is not an S3 bucket: Object Lock needs one",
            repo.store().location()
        ))
    })?;
    match cmd {
        Cmd::Show => {
            let b = repo.block_on(lock.bucket_lock())?;
            ctx.answer(&Shown {
                retention: repo.load_retention()?,
                bucket_versioning: b.versioning,
                bucket_object_lock: b.lock_enabled,
                bucket_default: b.default,
            });
        }
        Cmd::Set(a) => {
            let b = repo.block_on(lock.bucket_lock())?;
            if !b.lock_enabled {
                return Err(Error::invalid(format!(
                    "bucket of {} has no Object Lock; it can only be made with it (custody \
                     init --object-lock-days N with a new bucket)",
                    repo.store().location()
                )));
            }
            let old = repo.load_retention()?;
            let rec = RetentionRecord {
                format: custody::format::REPO_FORMAT,
                mode: LockMode::parse(&a.mode)?,
                days: a.days.max(1),
                conditional_writes: old.is_some_and(|o| o.conditional_writes),
                set: chrono::Utc::now(),
            };
            repo.set_retention(&rec, true)?;
            ctx.say(format_args!(
                "retention: {} for {} day(s) on every new object; run `custody retention \
                 extend` to extend what the recent snapshots need",
                rec.mode.as_str(),
                rec.days
            ));
        }
        Cmd::Extend { dry_run } => {
            let report = repo.extend_retention(*dry_run)?;
            ctx.emit(&report);
            // What could be extended was; what could not is named, and the exit code says so.
            if !report.problems.is_empty() {
                return Ok(Outcome(super::exit::INTEGRITY));
            }
        }
    }
    Ok(Outcome::OK)
}
