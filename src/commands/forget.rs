//! `forget`: delete snapshots by a keep policy (or by id), saying what is kept and why;
//! `--prune` then collects the garbage.

use std::collections::{BTreeMap, HashSet};

use super::prune::PruneArgs;
use super::{Ctx, FilterArgs, Outcome};
use custody::error::{Error, Result};
use custody::id::SnapshotId;
use custody::repo::forget::{
    apply, Decision, ForgetEntry, ForgetGroup, ForgetOutput, GroupBy, GroupKey, KeepPolicy,
};
use custody::repo::rewrap::parse_duration;
use custody::store::FileKind;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Snapshots to forget by id or prefix (instead of a policy).
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the N newest days that have one (local time).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the N newest years that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot less than DURATION older than the newest of its group (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Snapshots dated more than this in the future (by the clock of the host running
    /// forget) are kept and not counted by the policy: a clock running ahead, or a forgery.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub clock_skew: String,
    /// Apply the policy per group of snapshots sharing these fields: host, paths, tags.
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    pub group_by: String,
    /// Only these snapshots are considered.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Run `prune` afterwards.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneArgs,
}

/// A writer's enrolled name, `owner`, or its short id.
fn writer_name(repo: &custody::repo::Repository, w: &custody::SignerId) -> String {
    match repo.roster() {
        Some(r) if r.owner == *w => "owner".into(),
        Some(r) => r
            .enrolled
            .get(w)
            .map(|e| e.name.clone())
            .unwrap_or_else(|| w.short()),
        None => w.short(),
    }
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let policy = KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args
            .keep_within
            .as_deref()
            .map(parse_duration)
            .transpose()?,
        tags: args.keep_tag.clone(),
        not_after: Some(chrono::Utc::now() + parse_duration(&args.clock_skew)?),
    };
    if policy.is_empty() == args.snapshots.is_empty() {
        return Err(Error::invalid(
            "give either snapshot ids or a keep policy (--keep-last, --keep-daily, ...), not both; \
             a policy that keeps nothing is refused",
        ));
    }
    // Checked before anything is opened.
    GroupBy::parse(&args.group_by).map_err(Error::invalid)?;
    let prune_opts = args.prune_opts.options()?;
    let dry_run = args.prune_opts.dry_run;
    let repo = ctx.open_repo()?;
    if args.prune {
        repo.require_owner("forget --prune")?;
    } else if repo.signer().is_some() && repo.roster().is_none() {
        repo.require_owner("forget")?;
    }
    // A manifest that does not open (damaged, or forged over a genuine one) is kept, named,
    // and makes the command exit 3; the policy still applies to every other snapshot.
    // Under the repository lock (taken before the history is read), so that two forgets
    // never write two checkpoints of one generation.
    let lock = if dry_run {
        None
    } else {
        Some(repo.lock("forget")?)
    };
    let out = forget_locked(args, &repo, &policy, dry_run);
    let (output, unreadable) = custody::repo::lock::release_after(lock, out)?;
    // Prune takes the lock itself, after this run released it.
    let mut output = output;
    // Prune needs every manifest: with one that does not open it would stop anyway. One
    // signed by no one the owner accepts protects nothing, and prune passes over it.
    output.prune = if args.prune && unreadable.iter().any(|(_, untrusted)| !untrusted) {
        super::err_line(format_args!(
            "custody: --prune skipped: a snapshot's manifest does not open (see below)"
        ));
        None
    } else if args.prune {
        let act = custody::repo::activity::Activity::default();
        Some(super::progress::with_progress(
            ctx.show_progress(),
            || act.get(),
            || custody::repo::prune::prune(&repo, &prune_opts, &act),
        )?)
    } else {
        None
    };
    ctx.emit(&output);
    if !unreadable.is_empty() {
        for (e, _) in &unreadable {
            super::err_line(format_args!(
                "custody: {e} (kept; `custody forget ID` removes it)"
            ));
        }
        return Ok(Outcome(super::exit::INTEGRITY));
    }
    Ok(Outcome::OK)
}

/// The unreadable manifests: each message, and whether it is merely untrusted.
type Unreadable = Vec<(String, bool)>;

/// Applies the policy (or the ids) and writes the checkpoint, under the caller's lock.
fn forget_locked(
    args: &Args,
    repo: &custody::repo::Repository,
    policy: &custody::repo::forget::KeepPolicy,
    dry_run: bool,
) -> Result<(ForgetOutput, Unreadable)> {
    let filter = args.filter.filter();
    let group_by = GroupBy::parse(&args.group_by).map_err(Error::invalid)?;
    // The history must be intact: a snapshot withheld now would be left out of the
    // checkpoint this forget writes, and so forgotten (docs/FORMAT.md §18).
    let history = repo.history()?;
    history.require_intact("forget")?;
    let mut snaps = Vec::new();
    let unreadable = if args.snapshots.is_empty() {
        snaps.extend(
            history
                .snapshots
                .iter()
                .filter(|(_, s)| filter.matches(s))
                .cloned(),
        );
        history
            .unreadable
            .iter()
            .map(|e| (e.to_string(), e.is_untrusted()))
            .collect()
    } else {
        Vec::new()
    };
    let time_of =
        |id: &custody::id::SnapshotId| snaps.iter().find(|(i, _)| i == id).map(|(_, s)| s.time);
    let mut groups: BTreeMap<GroupKey, Vec<Decision>> = BTreeMap::new();
    if args.snapshots.is_empty() {
        let mut members: BTreeMap<GroupKey, Vec<_>> = BTreeMap::new();
        for (id, s) in &snaps {
            members
                .entry(group_by.key(s))
                .or_default()
                .push((*id, s.time, s.tags.clone()));
        }
        for (k, list) in members {
            groups.insert(k, apply(policy, &list, &chrono::Local));
        }
    } else {
        let mut list = Vec::new();
        for spec in &args.snapshots {
            let id = repo.resolve_snapshot_id(spec)?;
            list.push(Decision {
                id,
                keep: false,
                reasons: vec![],
            });
        }
        groups.insert(
            GroupKey {
                writer: None,
                host: None,
                paths: None,
                tags: None,
            },
            list,
        );
    }
    let gone: HashSet<SnapshotId> = groups
        .values()
        .flatten()
        .filter(|d| !d.keep)
        .map(|d| d.id)
        .collect();
    let removed = gone.len();
    if !dry_run {
        // The checkpoint first: once it is stored, the manifests are forgotten even if this
        // run stops before deleting them (and deleting them again is harmless).
        if repo.is_signed() && (!gone.is_empty() || history.checkpoint.is_none()) {
            repo.write_checkpoint(&history, &gone)?;
        }
        for id in gone.iter().chain(&history.verdict.forgotten) {
            repo.store().delete(FileKind::Snapshot, id)?;
            repo.store().delete(FileKind::Reach, id)?;
        }
    }
    let entry = |(rank, d): (usize, &Decision)| ForgetEntry {
        id: d.id,
        time: time_of(&d.id),
        reasons: d.reasons.clone(),
        rank,
    };
    let output = ForgetOutput {
        dry_run,
        groups: groups
            .iter()
            .map(|(k, ds)| ForgetGroup {
                group: k.clone(),
                writer_name: k.writer.map(|w| writer_name(repo, &w)),
                keep: ds
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.keep)
                    .map(entry)
                    .collect(),
                remove: ds
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| !d.keep)
                    .map(entry)
                    .collect(),
            })
            .collect(),
        removed,
        prune: None,
    };
    Ok((output, unreadable))
}
