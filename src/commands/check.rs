//! `check`: verify the repository's structure and, optionally, its data.

use super::{exit, Ctx, Outcome};
use custody::error::{Error, Result};
use custody::repo::check::{self, CheckOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Read every pack and verify every blob (AEAD, commitment, HMAC = id).
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read only subset N of M of the packs, e.g. 2/7 (spread a full read over M runs).
    #[arg(long, value_name = "N/M")]
    pub read_data_subset: Option<String>,
}

fn parse_subset(s: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::invalid(format!(
            "--read-data-subset {s:?}: expected N/M with 1 <= N <= M <= 256"
        ))
    };
    let (n, m) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let m: u32 = m.trim().parse().map_err(|_| bad())?;
    if n == 0 || m == 0 || n > m || m > 256 {
        return Err(bad());
    }
    Ok((n, m))
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let subset = args
        .read_data_subset
        .as_deref()
        .map(parse_subset)
        .transpose()?;
    // Check what the bucket holds, not the local tree cache.
    let repo = ctx
        .open_repo()?
        .with_tree_cache(None)
        .with_segment_cache(None);
    let opts = CheckOptions {
        read_data: args.read_data || subset.is_some(),
        subset,
    };
    let report = check::check(&repo, &opts)?;
    if ctx.json {
        ctx.print_report(&report);
    } else {
        ctx.say(format!(
            "checked {} snapshot(s), {} tree(s), {} pack(s){}",
            report.snapshots,
            report.trees,
            report.packs,
            if opts.read_data {
                format!(
                    "; read {} pack(s), verified {} blob(s)",
                    report.packs_read, report.blobs_verified
                )
            } else {
                String::new()
            }
        ));
        if !report.temporaries.is_empty() {
            ctx.say(format!(
                "{} partial file(s) of interrupted writes ({}; harmless: prune removes them once \
                 unchanged for the grace period, and at least 15 minutes)",
                report.temporaries.len(),
                super::human_bytes(report.temporaries.iter().map(|t| t.1).sum())
            ));
        }
        if !report.leftovers.is_empty() {
            ctx.say(format!(
                "{} unreferenced pack(s) (harmless leftovers of interrupted backups; prune removes them)",
                report.leftovers.len()
            ));
        }
        if report.unsigned {
            ctx.say(
                "objects in this repository are not signed (made before writer provenance): a \
                 writer's forgeries cannot be told from genuine objects; run `custody migrate`",
            );
        } else if report.writers > 0 {
            ctx.say(format!(
                "{} enrolled writer(s), {} revoked",
                report.writers, report.revoked_writers
            ));
        }
        if !report.forgotten.is_empty() {
            ctx.say(format!(
                "{} forgotten snapshot(s) still stored (an interrupted forget, or put back by the \
                 storage custodian): not counted as snapshots; the next forget deletes them",
                report.forgotten.len()
            ));
        }
        if report.unchained > 0 {
            ctx.say(format!(
                "{} snapshot(s) from before history chains: a deletion among them is noticed \
                 only after the next forget writes a checkpoint",
                report.unchained
            ));
        }
        if report.requests > 0 {
            ctx.say(format!(
                "{} restore request(s) with {} answer(s), all verified",
                report.requests, report.approvals
            ));
        }
        if report.without_reach > 0 && report.requests > 0 {
            ctx.say(format!(
                "{} snapshot(s) without a record of the session keys they need: restore                  requests for them wait for `custody repair reach`",
                report.without_reach
            ));
        }
        if report.unbound_ids > 0 {
            ctx.say(format!(
                "{} snapshot(s) have ids from before ids were bound to manifests: a manifest \
                 written over one of them would not be detected",
                report.unbound_ids
            ));
        }
        for s in &report.future_dated {
            super::err_line(format_args!("warning: {s} is dated in the future beyond the clock-skew allowance (a clock running ahead, or a forgery): forget keeps it and does not count it"));
        }
        for p in &report.problems {
            super::err_line(format_args!(
                "{}: {}: {}",
                if p.integrity {
                    "integrity failure"
                } else {
                    "error"
                },
                p.object,
                p.message
            ));
        }
        if report.damage_recorded > 0 {
            ctx.say(format!(
                "{} pack(s) recorded as missing or damaged: the next backups store their chunks \
                 again, so new snapshots restore (docs/FORMAT.md §14d)",
                report.damage_recorded
            ));
        }
        if report.condemned > 0 || report.marks > 0 {
            ctx.say(format!(
                "{} condemned pack(s) awaiting deletion by {} garbage mark(s) (harmless)",
                report.condemned, report.marks
            ));
        }
        if report.problems.is_empty() {
            ctx.say("no problems found");
        }
    }
    if report.has_integrity_problems() {
        return Ok(Outcome(exit::INTEGRITY));
    }
    if report.problems.iter().any(|p| p.key_service) {
        return Ok(Outcome(exit::KEY_SERVICE));
    }
    if !report.problems.is_empty() {
        return Ok(Outcome(exit::ERROR));
    }
    Ok(Outcome::OK)
}

#[cfg(test)]
mod tests {
    use super::parse_subset;

    #[test]
    fn subsets() {
        assert_eq!(parse_subset("2/7").unwrap(), (2, 7));
        for bad in ["0/3", "4/3", "x", "1/0", "1/300"] {
            assert!(parse_subset(bad).is_err(), "{bad}");
        }
    }
}
