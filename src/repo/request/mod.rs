//! Restore requests under dual control (docs/FORMAT.md §19): a requester asks for one
//! snapshot, each key holder answers with its own key service alone, and the requester
//! restores once M holders approved. An approval holds the holder's parts of the session keys
//! the snapshot's reach names, sealed to the request's public key, so what it releases is
//! useless to anyone but the requester, and only for that snapshot's sessions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::objects::SealedObject;
use super::Repository;
use crate::crypto::envelope::ObjectKind;
use crate::crypto::{aead, kdf, random, sealed_box, Key32};
use crate::error::{Error, Result};
use crate::format::request::{part_binding, Approval, Decision, ReleasedPart, RestoreRequest};
use crate::format::wrapped::{context, Purpose};
use crate::format::{check_format, from_json, padded_json, DecodeError, REPO_FORMAT};
use crate::id::{ApprovalId, Id, RequestId, SessionId, SnapshotId};
use crate::keyservice::quorum::Quorum;
use crate::store::FileKind;

mod status;

pub use status::{Answer, RequestStatus};

impl SealedObject for RestoreRequest {
    type Id = RequestId;
    const FILE: FileKind = FileKind::Request;
    const KIND: ObjectKind = ObjectKind::Request;
    const SIGNED: bool = false;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 1024)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let r: RestoreRequest = from_json("restore request", plain)?;
        check_format("restore request", r.format)?;
        Ok(r)
    }
}

impl SealedObject for Approval {
    type Id = ApprovalId;
    const FILE: FileKind = FileKind::Approval;
    const KIND: ObjectKind = ObjectKind::Approval;
    const SIGNED: bool = false;
    fn encode(&self) -> Vec<u8> {
        padded_json(self, 4096)
    }
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        let a: Approval = from_json("approval", plain)?;
        check_format("approval", a.format)?;
        Ok(a)
    }
}

/// What `request create` is given.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub snapshot: SnapshotId,
    pub include: Vec<String>,
    pub reason: String,
    pub requester: String,
    pub valid_for: chrono::Duration,
}

/// The quorum this repository's key service is, for request commands.
pub fn quorum_for(repo: &Repository) -> Result<&Quorum> {
    repo.key_service()
        .inner()
        .as_any()
        .downcast_ref::<Quorum>()
        .ok_or_else(|| {
            Error::invalid(format!(
                "restore requests need a quorum key service (quorum:FILE); this one is {}",
                repo.key_service().url()
            ))
        })
}

/// A request's id: a hash of what it asks (`SHA-256("custody/v2/request-id" || R || its
/// compact JSON)`), so that nobody who holds the index key (a writer, one holder) can change
/// an existing request's public key, snapshot, paths or expiry: the changed request no longer
/// has its name, and approvals bound to the name release nothing to it.
pub fn request_id_of(repo: &Id, request: &RestoreRequest) -> RequestId {
    let body = serde_json::to_vec(request).expect("a request serializes");
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    d.update(b"custody/v2/request-id");
    d.update(repo.as_bytes());
    d.update(&body);
    let mut id = [0u8; 32];
    id.copy_from_slice(d.finish().as_ref());
    RequestId(Id(id))
}

/// The fingerprint of a request's public key that `create` and `approve` show, so that a
/// holder can compare it with the requester out of band.
pub fn key_fingerprint(request: &RestoreRequest) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, request.public.as_bytes());
    hex::encode(&d.as_ref()[..8])
}

/// Where a requester keeps the private key of one request:
/// `<dir>/<repository>/<request>.key`.
pub fn request_key_path(dir: &Path, repo: &Id, request: &RequestId) -> PathBuf {
    dir.join(repo.to_hex())
        .join(format!("{}.key", request.to_hex()))
}

impl Repository {
    /// Seals a request's private key for this machine's disk: under a key derived from the
    /// index key, so a copy of the file alone (a backup of the home folder) opens nothing.
    fn request_key_sealer(&self, request: &RequestId) -> Key32 {
        kdf::derive_key(
            self.id().as_bytes(),
            &self.secrets.index_key,
            &[b"custody/v2/request-key", request.as_bytes()],
        )
    }

    /// `request create`: makes the request's key pair, keeps the private half at
    /// [`request_key_path`] (mode 0600) and stores the request.
    pub fn create_request(
        &self,
        new: NewRequest,
        key_dir: &Path,
    ) -> Result<(RequestId, RestoreRequest)> {
        // A request nobody could answer is refused now rather than after the holders look.
        self.verified_reach(&new.snapshot)?;
        let secret = Key32::generate()?;
        let created = Utc::now();
        let expires = created
            .checked_add_signed(new.valid_for)
            .ok_or_else(|| Error::invalid("--expires is too far in the future"))?;
        let request = RestoreRequest {
            format: REPO_FORMAT,
            snapshot: new.snapshot,
            include: new.include,
            reason: new.reason,
            requester: new.requester,
            created,
            expires,
            public: hex::encode(sealed_box::public_key(&secret)),
        };
        let id = request_id_of(&self.id(), &request);
        let path = request_key_path(key_dir, &self.id(), &id);
        let mut nonce = [0u8; aead::NONCE_LEN];
        random::fill(&mut nonce)?;
        let mut buf = secret.expose().to_vec();
        let tag = aead::seal(
            &self.request_key_sealer(&id),
            &nonce,
            id.as_bytes(),
            &mut buf,
        );
        let sealed = [nonce.as_slice(), &buf, &tag].concat();
        super::provenance::write_private(&path, &sealed)
            .map_err(|e| Error::io(path.display(), e))?;
        self.save_object(&id, &request)?;
        Ok((id, request))
    }

    /// The private key of a request made on this machine.
    pub fn request_secret(&self, id: &RequestId, key_dir: &Path) -> Result<Key32> {
        let path = request_key_path(key_dir, &self.id(), id);
        let sealed = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::KeyDenied {
                key: format!("request {}", id.short()),
                operation: "restore".into(),
                reason: format!(
                    "its private key is not on this machine ({}): only the requester can restore, and only until the request expires",
                    path.display()
                ),
            },
            _ => Error::io(path.display(), e),
        })?;
        let bad = || Error::integrity(path.display(), "the request's private key does not open");
        if sealed.len() != aead::NONCE_LEN + 32 + aead::TAG_LEN {
            return Err(bad());
        }
        let (nonce, rest) = sealed.split_at(aead::NONCE_LEN);
        let nonce: [u8; aead::NONCE_LEN] = nonce.try_into().map_err(|_| bad())?;
        let mut buf = zeroize::Zeroizing::new(rest.to_vec());
        aead::open(
            &self.request_key_sealer(id),
            &nonce,
            id.as_bytes(),
            &mut buf[..],
        )
        .map_err(|_| bad())?;
        Key32::from_slice(&buf[..32]).ok_or_else(bad)
    }

    /// Destroys the private key of a request (expired, or no longer wanted): overwritten,
    /// then removed. Returns whether there was one.
    pub fn destroy_request_secret(&self, id: &RequestId, key_dir: &Path) -> Result<bool> {
        let path = request_key_path(key_dir, &self.id(), id);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(path.display(), e)),
            Ok(m) => {
                // Overwritten in place (not replaced by a new file), then removed.
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(path.display(), e))?;
                f.write_all(&vec![0u8; m.len() as usize])
                    .and_then(|()| f.sync_all())
                    .map_err(|e| Error::io(path.display(), e))?;
            }
        }
        std::fs::remove_file(&path).map_err(|e| Error::io(path.display(), e))?;
        Ok(true)
    }

    /// Loads a request and checks that it is the one its name was made from.
    pub fn load_request(&self, id: &RequestId) -> Result<RestoreRequest> {
        let request = self.load_object::<RestoreRequest>(id)?;
        if request_id_of(&self.id(), &request) != *id {
            return Err(Error::integrity(
                crate::store::object_name(FileKind::Request, id),
                "not the request its name was made from (rewritten by someone who holds the index key)",
            ));
        }
        Ok(request)
    }

    /// A request id from a full id or a unique prefix.
    pub fn resolve_request(&self, spec: &str) -> Result<RequestId> {
        let spec = spec.to_ascii_lowercase();
        if spec.is_empty() || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!("request {spec:?} is not an id")));
        }
        let found: Vec<RequestId> = self
            .store()
            .list(FileKind::Request)?
            .into_iter()
            .map(|(id, _)| RequestId(id))
            .filter(|id| id.to_hex().starts_with(&spec))
            .collect();
        match found.as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::NotFound(format!("request {spec}"))),
            _ => Err(Error::invalid(format!(
                "request prefix {spec} is ambiguous"
            ))),
        }
    }

    /// `request approve|deny`, as one holder with its own key service: for an approval,
    /// unwraps this holder's part of every session key the snapshot's reach names (and no
    /// other) and seals each to the request's public key. Returns the stored answer.
    pub fn answer_request(
        &self,
        id: &RequestId,
        holder: &str,
        decision: Decision,
        reason: String,
    ) -> Result<(ApprovalId, Approval)> {
        let quorum = quorum_for(self)?;
        let status = self.request_status(id)?;
        if status.expired {
            return Err(Error::invalid(format!(
                "request {} expired at {}: it can no longer be answered",
                id.short(),
                crate::human::local_time(status.request.expires)
            )));
        }
        if status
            .answers
            .iter()
            .any(|a| a.holder == holder && a.problem.is_none())
        {
            return Err(Error::invalid(format!(
                "holder {holder} has already answered request {}",
                id.short()
            )));
        }
        let mut parts = Vec::new();
        if decision == Decision::Approve {
            let public = status.request.public_key().ok_or_else(|| {
                Error::integrity(
                    crate::store::object_name(FileKind::Request, id),
                    "its public key is not 32 bytes of hex",
                )
            })?;
            let reach = self.verified_reach(&status.request.snapshot)?;
            for session in &reach.sessions {
                let rec = match self.load_key_record(session) {
                    Err(Error::NotFound(_)) => continue, // a session prune has retired
                    r => r?,
                };
                if rec.purpose != Purpose::SessionKey
                    || rec.repository != self.id()
                    || rec.key_id != **session
                {
                    return Err(Error::integrity(
                        crate::store::object_name(FileKind::Key, session),
                        "record of another key (swapped or copied)",
                    ));
                }
                let ctx = context(Purpose::SessionKey, &self.id(), session);
                self.check_policy(&rec.wrapped)?;
                let (x, y) = self.block_on(quorum.holder_part(holder, &rec.wrapped, &ctx))?;
                let binding = part_binding(&self.id(), id, holder, session, x);
                parts.push(ReleasedPart {
                    session: *session,
                    x,
                    sealed: sealed_box::seal(&public, &binding, &y)?,
                });
                crate::keyservice::audit_request(
                    "release-part",
                    &rec.wrapped.kek,
                    &ctx,
                    &id.to_hex(),
                );
            }
        }
        let answer = Approval {
            format: REPO_FORMAT,
            request: *id,
            holder: holder.into(),
            decision,
            reason,
            time: Utc::now(),
            parts,
        };
        let aid = ApprovalId::random()?;
        self.save_object(&aid, &answer)?;
        Ok((aid, answer))
    }

    /// The session keys an approved request releases to its requester: the parts of every
    /// approval that counts, opened with the request's private key and combined session by
    /// session. An approval with a part that does not open (bound to another request, or
    /// altered) is left out; when that leaves too few, the error names it (integrity). A
    /// part that does not match its holder's check value is refused the same way by
    /// [`Quorum::combine`].
    pub fn released_keys(
        &self,
        status: &RequestStatus,
        secret: &Key32,
    ) -> Result<HashMap<SessionId, Key32>> {
        let quorum = quorum_for(self)?;
        let mut by_session: BTreeMap<SessionId, Vec<(String, u8, Key32)>> = BTreeMap::new();
        let (mut valid, mut refused) = (0usize, Vec::new());
        for answer in status.answers.iter().filter(|a| {
            a.problem.is_none()
                && a.decision == Decision::Approve
                && status.approved_by.contains(&a.holder)
        }) {
            let approval = self.load_object::<Approval>(&answer.id)?;
            let name = crate::store::object_name(FileKind::Approval, &answer.id);
            let opened: Option<Vec<_>> = approval
                .parts
                .iter()
                .map(|p| {
                    let binding =
                        part_binding(&self.id(), &status.id, &approval.holder, &p.session, p.x);
                    sealed_box::open(secret, &binding, &p.sealed).map(|y| (p.session, p.x, y))
                })
                .collect();
            let Some(opened) = opened else {
                refused.push(format!(
                    "{name} (holder {}): a part does not open with this request's key (bound to another request, or altered)",
                    approval.holder
                ));
                continue;
            };
            valid += 1;
            for (session, x, y) in opened {
                by_session
                    .entry(session)
                    .or_default()
                    .push((approval.holder.clone(), x, y));
            }
        }
        if valid < usize::from(status.required) {
            let why = format!(
                "{valid} of {} approvals hold parts for this request; refused: {}",
                status.required,
                refused.join("; ")
            );
            return Err(if refused.is_empty() {
                Error::KeyDenied {
                    key: format!("request {}", status.id.short()),
                    operation: "restore".into(),
                    reason: why,
                }
            } else {
                Error::integrity(
                    crate::store::object_name(FileKind::Request, &status.id),
                    why,
                )
            });
        }
        let mut keys = HashMap::new();
        for (session, released) in by_session {
            let rec = self.load_key_record(&session)?;
            self.check_policy(&rec.wrapped)?;
            let ctx = context(Purpose::SessionKey, &self.id(), &session);
            let key = quorum.combine(&rec.wrapped, &ctx, &released)?;
            crate::keyservice::audit_request(
                "combine-parts",
                &rec.wrapped.kek,
                &ctx,
                &status.id.to_hex(),
            );
            keys.insert(session, key);
        }
        Ok(keys)
    }

    /// Makes released session keys this repository's own for this process (a restore by
    /// request): every other session still goes to the key service, which refuses it.
    pub fn use_session_keys(&self, keys: HashMap<SessionId, Key32>) {
        self.session_keys.lock().expect("lock").extend(keys);
    }
}
