//! The state of restore requests as any reader sees it: each request with its answers, which
//! count, and what `check` verifies (docs/FORMAT.md §19.4).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{quorum_for, request_id_of};
use crate::error::{Error, Result};
use crate::format::request::{Approval, Decision, RestoreRequest};
use crate::id::{ApprovalId, RequestId, SessionId};
use crate::repo::Repository;
use crate::store::FileKind;

/// One holder's answer as a reader of the repository sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub id: ApprovalId,
    pub holder: String,
    pub decision: Decision,
    pub time: DateTime<Utc>,
    pub reason: String,
    /// Parts released (one per session).
    pub parts: usize,
    /// The sessions whose key parts it released.
    pub sessions: Vec<SessionId>,
    /// Why it does not count, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A request with its answers, as `request list|show` report it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestStatus {
    pub id: RequestId,
    #[serde(flatten)]
    pub request: RestoreRequest,
    /// Holders that must approve (M) and all holders.
    pub required: u8,
    pub holders: Vec<String>,
    pub answers: Vec<Answer>,
    /// Holders whose approval counts (each once).
    pub approved_by: Vec<String>,
    pub denied_by: Vec<String>,
    pub expired: bool,
    /// `approved`, `denied`, `expired` or `waiting`.
    pub state: String,
}

impl RequestStatus {
    pub fn approved(&self) -> bool {
        self.state == "approved"
    }
}

impl Repository {
    /// Every request with its answers, oldest first; records that do not open are returned
    /// as errors (`check` and `request list` report them).
    pub fn request_statuses(&self) -> Result<(Vec<RequestStatus>, Vec<Error>)> {
        let mut problems = Vec::new();
        let mut approvals: BTreeMap<RequestId, Vec<(ApprovalId, Approval)>> = BTreeMap::new();
        self.for_each_object::<Approval>(|id, a| {
            match a {
                Ok(a) => approvals.entry(a.request).or_default().push((id, a)),
                Err(e) if e.is_integrity() => problems.push(e),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        let mut out = Vec::new();
        self.for_each_object::<RestoreRequest>(|id, r| {
            let r = r.and_then(|r| {
                if request_id_of(&self.id(), &r) == id {
                    Ok(r)
                } else {
                    Err(Error::integrity(
                        crate::store::object_name(FileKind::Request, &id),
                        "not the request its name was made from (rewritten)",
                    ))
                }
            });
            match r {
                Ok(r) => {
                    let answers = approvals.remove(&id).unwrap_or_default();
                    out.push(self.status_of(id, r, answers)?);
                }
                Err(e) if e.is_integrity() => problems.push(e),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        for (request, list) in approvals {
            for (id, _) in list {
                problems.push(Error::integrity(
                    crate::store::object_name(FileKind::Approval, &id),
                    format!("answers request {}, which is not stored", request.short()),
                ));
            }
        }
        out.sort_by_key(|s| s.request.created);
        Ok((out, problems))
    }

    /// One request with its answers.
    pub fn request_status(&self, id: &RequestId) -> Result<RequestStatus> {
        let request = self.load_request(id)?;
        let mut answers = Vec::new();
        self.for_each_object::<Approval>(|aid, a| {
            match a {
                Ok(a) if a.request == *id => answers.push((aid, a)),
                Ok(_) => {}
                Err(e) if e.is_integrity() => tracing::warn!("{e}"),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        self.status_of(*id, request, answers)
    }

    fn status_of(
        &self,
        id: RequestId,
        request: RestoreRequest,
        mut found: Vec<(ApprovalId, Approval)>,
    ) -> Result<RequestStatus> {
        let quorum = quorum_for(self)?;
        let holders = quorum.holder_names();
        found.sort_by_key(|(_, a)| a.time);
        let mut answers = Vec::new();
        let (mut approved_by, mut denied_by) = (Vec::<String>::new(), Vec::<String>::new());
        for (aid, a) in found {
            let problem = if !holders.contains(&a.holder) {
                Some(format!("{} is not a holder of this quorum", a.holder))
            } else if a.time > request.expires {
                Some("made after the request expired".to_string())
            } else if approved_by.contains(&a.holder) || denied_by.contains(&a.holder) {
                Some("this holder answered before; the first answer counts".to_string())
            } else {
                None
            };
            if problem.is_none() {
                match a.decision {
                    Decision::Approve => approved_by.push(a.holder.clone()),
                    Decision::Deny => denied_by.push(a.holder.clone()),
                }
            }
            answers.push(Answer {
                id: aid,
                holder: a.holder,
                decision: a.decision,
                time: a.time,
                reason: a.reason,
                parts: a.parts.len(),
                sessions: a.parts.iter().map(|p| p.session).collect(),
                problem,
            });
        }
        let expired = Utc::now() > request.expires;
        let required = quorum.required();
        let state = if !denied_by.is_empty() {
            "denied"
        } else if expired {
            "expired"
        } else if approved_by.len() >= usize::from(required) {
            "approved"
        } else {
            "waiting"
        };
        Ok(RequestStatus {
            id,
            request,
            required,
            holders,
            answers,
            approved_by,
            denied_by,
            expired,
            state: state.into(),
        })
    }

    /// What `check` verifies of restore requests: every reach, request and approval opens
    /// and is vouched for, and every approval answers a stored request. Returns (snapshots
    /// without a reach, requests, approvals) and the problems.
    pub(crate) fn check_requests(&self) -> Result<((usize, usize, usize), Vec<Error>)> {
        let mut problems = Vec::new();
        let mut without_reach = 0;
        for id in self.snapshot_ids()? {
            match self.verified_reach(&id) {
                Ok(_) => {}
                Err(Error::NotFound(_)) => without_reach += 1,
                Err(e) if e.is_integrity() => problems.push(e),
                Err(e) => return Err(e),
            }
        }
        let mut requests = std::collections::HashSet::new();
        self.for_each_object::<RestoreRequest>(|id, r| {
            match r.and_then(|_| self.load_request(&id)) {
                Ok(_) => {
                    requests.insert(id);
                }
                Err(e) if e.is_integrity() => problems.push(e),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        let mut approvals = 0;
        self.for_each_object::<Approval>(|id, a| {
            match a {
                Ok(a) if requests.contains(&a.request) => approvals += 1,
                Ok(a) => problems.push(Error::integrity(
                    crate::store::object_name(FileKind::Approval, &id),
                    format!("answers request {}, which is not stored", a.request.short()),
                )),
                Err(e) if e.is_integrity() => problems.push(e),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        Ok(((without_reach, requests.len(), approvals), problems))
    }
}
