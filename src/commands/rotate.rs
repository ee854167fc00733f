//! `rotate`: re-wrap every wrapped key under new KEKs.

use serde_json::json;

use super::{Ctx, Outcome};
use crate::error::Result;
use crate::keyservice;
use crate::repo::rewrap::{self, parse_duration, RewrapOptions};
use crate::repo::Repository;

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
}

pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<Outcome> {
    let Cmd::Rewrap {
        to,
        dry_run,
        older_than,
        no_verify,
    } = cmd;
    let created_before = older_than
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| chrono::Utc::now() - d);
    let store = ctx.store()?;
    let config = Repository::read_config(ctx.rt.handle(), &store)?;
    let from = ctx.open_key_service(&config.body.repository)?;
    let dest = keyservice::open(to, &ctx.key_options(), ctx.rt.handle())?;
    let opts = RewrapOptions {
        dry_run: *dry_run,
        created_before,
        verify: !no_verify,
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
                println!("{line}");
            }
        },
    ))?;
    if ctx.json {
        let mut v = json!(report);
        v["to"] = json!(dest.url());
        ctx.print_json(&v);
    } else {
        ctx.say(format!(
            "{} {} key(s) under {}; {} already there, {} newer than --older-than{}",
            if *dry_run { "would rewrap" } else { "rewrapped" },
            report.rewrapped,
            dest.url(),
            report.already_done,
            report.too_new,
            if report.unverified > 0 {
                format!("; {} not verified (the destination refused to unwrap: verify with `custody check` as a key holder)", report.unverified)
            } else {
                String::new()
            }
        ));
        if !dry_run && report.rewrapped + report.already_done > 0 {
            ctx.say(format!("use --key-service {} from now on", dest.url()));
        }
    }
    Ok(Outcome::OK)
}
