//! `request create|list|show|approve|deny`: restores under dual control (docs/FORMAT.md §19).
//! Every subcommand opens the repository as one key holder may: with the repository secret,
//! without the owner anchor a quorum makes only together.

use std::fmt;

use super::{exit, Ctx, Outcome};
use custody::error::{Error, Result};
use custody::format::request::Decision;
use custody::human::local_time;
use custody::repo::request::{NewRequest, RequestStatus};
use custody::repo::Repository;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Ask the key holders to release one snapshot to you: stores the request (with a public
    /// key made for it alone; its private half stays on this machine) and prints its id.
    Create(CreateArgs),
    /// List restore requests, their answers and state.
    List,
    /// Show one request: what is asked, and who answered how.
    Show { request: String },
    /// Approve a request as one key holder: releases this holder's parts of the keys the
    /// snapshot needs, sealed to the requester.
    Approve(AnswerArgs),
    /// Deny a request as one key holder (one denial refuses it).
    Deny(AnswerArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Snapshot id or unique prefix (a key holder below quorum cannot read manifests, so
    /// not `latest`).
    pub snapshot: String,
    /// Restore only this path (repeatable; default: the whole snapshot).
    #[arg(long = "include", short = 'i')]
    pub include: Vec<String>,
    /// Why: shown to every key holder.
    #[arg(long)]
    pub reason: String,
    /// How long the request stays valid (e.g. 24h, 3d).
    #[arg(long, default_value = "24h")]
    pub expires: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AnswerArgs {
    pub request: String,
    /// Which holder of the quorum file answers (default: the only one whose key service is
    /// present here).
    #[arg(long)]
    pub holder: Option<String>,
    /// Shown to the requester and the other holders (required to deny).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(serde::Serialize)]
struct Created {
    request: custody::id::RequestId,
    key_fingerprint: String,
    snapshot: custody::id::SnapshotId,
    expires: chrono::DateTime<chrono::Utc>,
    sessions: usize,
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "request {} created", self.request)?;
        writeln!(
            f,
            "its key's fingerprint is {}: tell the key holders, who see it when they approve",
            self.key_fingerprint
        )?;
        writeln!(
            f,
            "snapshot {} ({} session key(s)), valid until {}",
            self.snapshot.short(),
            self.sessions,
            local_time(self.expires)
        )?;
        write!(
            f,
            "ask the key holders to run `custody request approve {}`",
            self.request.short()
        )
    }
}

struct Shown<'a>(&'a RequestStatus);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let r = &s.request;
        writeln!(f, "request {}  [{}]", s.id, s.state)?;
        writeln!(f, "  snapshot:  {}", r.snapshot)?;
        if !r.include.is_empty() {
            writeln!(f, "  paths:     {}", r.include.join(", "))?;
        }
        writeln!(f, "  requester: {}", r.requester)?;
        writeln!(
            f,
            "  key:       {} (ask the requester to confirm it)",
            custody::repo::request::key_fingerprint(r)
        )?;
        writeln!(f, "  reason:    {}", r.reason)?;
        writeln!(
            f,
            "  created:   {}; expires {}",
            local_time(r.created),
            local_time(r.expires)
        )?;
        write!(
            f,
            "  approvals: {} of {} needed ({} holders: {})",
            s.approved_by.len(),
            s.required,
            s.holders.len(),
            s.holders.join(", ")
        )?;
        for a in &s.answers {
            write!(
                f,
                "\n    {} {:?} at {}{}{}",
                a.holder,
                a.decision,
                local_time(a.time),
                if a.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.reason)
                },
                a.problem
                    .as_ref()
                    .map(|p| format!(" (does not count: {p})"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

#[derive(serde::Serialize)]
struct Listing {
    requests: Vec<RequestStatus>,
    problems: Vec<String>,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requests.is_empty() {
            write!(f, "no restore requests")?;
        }
        for (i, s) in self.requests.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", Shown(s))?;
        }
        for p in &self.problems {
            write!(f, "\nproblem: {p}")?;
        }
        Ok(())
    }
}

/// The one holder this client answers as.
fn holder_of(repo: &Repository, wanted: Option<&str>) -> Result<String> {
    let quorum = custody::repo::request::quorum_for(repo)?;
    let present = quorum.present_holders();
    match wanted {
        Some(h) if present.iter().any(|p| p == h) => Ok(h.to_string()),
        Some(h) => Err(Error::KeyUnavailable {
            key: format!("holder {h}"),
            operation: "approve".into(),
            reason: format!(
                "its key service is not available here (present: {})",
                if present.is_empty() { "none".into() } else { present.join(", ") }
            ),
        }),
        None => match present.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::KeyUnavailable {
                key: quorum.path().display().to_string(),
                operation: "approve".into(),
                reason: "no holder's key service is available here".into(),
            }),
            many => Err(Error::invalid(format!(
                "several holders' key services are present here ({}): say which one answers with --holder",
                many.join(", ")
            ))),
        },
    }
}

pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<Outcome> {
    let repo = ctx.open_repo_for_requests()?;
    match cmd {
        Cmd::Create(a) => {
            let snapshot = repo.resolve_snapshot_id(&a.snapshot)?;
            let valid_for = custody::repo::rewrap::parse_duration(&a.expires)?;
            if a.reason.trim().is_empty() {
                return Err(Error::invalid("--reason must say why"));
            }
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            let (id, request) = repo.create_request(
                NewRequest {
                    snapshot,
                    include: a.include.clone(),
                    reason: a.reason.clone(),
                    requester: format!("{}@{host}", ctx.env.client.username),
                    valid_for,
                },
                &ctx.request_key_dir(),
            )?;
            let sessions = repo.verified_reach(&snapshot)?.sessions.len();
            ctx.emit(&Created {
                request: id,
                key_fingerprint: custody::repo::request::key_fingerprint(&request),
                snapshot,
                expires: request.expires,
                sessions,
            });
        }
        Cmd::List => {
            let (requests, problems) = repo.request_statuses()?;
            // Expired requests made here: their private keys go now, not at the next restore.
            for s in requests.iter().filter(|s| s.expired) {
                if repo.destroy_request_secret(&s.id, &ctx.request_key_dir())? {
                    tracing::info!(request = %s.id, "destroyed the private key of an expired request");
                }
            }
            let listing = Listing {
                requests,
                problems: problems.iter().map(|e| e.to_string()).collect(),
            };
            ctx.answer(&listing);
            if !problems.is_empty() {
                return Ok(Outcome(exit::INTEGRITY));
            }
        }
        Cmd::Show { request } => {
            let id = repo.resolve_request(request)?;
            let status = repo.request_status(&id)?;
            if ctx.json {
                ctx.print_report(&status);
            } else {
                ctx.answer(&Shown(&status).to_string());
            }
        }
        Cmd::Approve(a) | Cmd::Deny(a) => {
            let decision = if matches!(cmd, Cmd::Approve(_)) {
                Decision::Approve
            } else {
                Decision::Deny
            };
            let reason = a.reason.clone().unwrap_or_default();
            if decision == Decision::Deny && reason.trim().is_empty() {
                return Err(Error::invalid("deny needs --reason"));
            }
            let id = repo.resolve_request(&a.request)?;
            let holder = holder_of(&repo, a.holder.as_deref())?;
            // What is asked, before anything is released.
            let status = repo.request_status(&id)?;
            let reach = repo.verified_reach(&status.request.snapshot)?;
            super::err_line(format_args!(
                "{}\n  snapshot of host {} at {}, vouched for by {}; {} session key(s)",
                Shown(&status),
                reach.reach.host,
                local_time(reach.reach.time),
                reach.vouched_by,
                reach.sessions.len()
            ));
            let (_, answer) = repo.answer_request(&id, &holder, decision, reason)?;
            let after = repo.request_status(&id)?;
            ctx.say(format_args!(
                "{holder} {} request {} ({} part(s) released); {} of {} approvals",
                match decision {
                    Decision::Approve => "approved",
                    Decision::Deny => "denied",
                },
                id.short(),
                answer.parts.len(),
                after.approved_by.len(),
                after.required
            ));
        }
    }
    Ok(Outcome::OK)
}
