//! A quorum of key services (`quorum:FILE`, docs/FORMAT.md §11.4): M of N holders, each any
//! other backend (a local keyring, a KMS key, a PKCS#11 token), possibly in different places.
//! Every key is split with Shamir's scheme over GF(256) (the `blahaj` crate) so that any M
//! parts recover it and M-1 tell nothing about it; each part is wrapped by its own holder's
//! KEK, with the holder and the part bound into its context. A writer's quorum file names the
//! holders' writer keyrings (or encrypt-only KMS credentials): it wraps parts, never unwraps.
//!
//! The repository secret `M` is the exception: every holder wraps all of it (a quorum of
//! one). `M` is what every writer holds already (it names and indexes chunks but opens no
//! data), and a single holder needs it to read and answer restore requests (§19).
//!
//! The owner anchor (§17.1) cannot come from one holder: `key create` makes a random anchor
//! secret, splits it the same way and keeps the wrapped parts in the quorum file, so any M
//! holders compute the same anchor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

mod file;
mod release;

pub use file::{HolderEntry, QuorumFile};
pub use release::part_check;

use super::{KekInfo, KeyService, KeyServiceOptions, KeyServiceUrl};
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::wrapped::{Context, Purpose, WrappedKey};
use crate::id::Id;

/// The algorithm name of a quorum-wrapped key.
pub const ALGORITHM: &str = "shamir-gf256/v1";
const ANCHOR_LABEL: &[u8] = b"custody/v2/quorum-owner-anchor";

/// One holder's part of a key: its x coordinate and its y values, wrapped by the holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub holder: String,
    pub x: u8,
    pub wrapped: WrappedKey,
    /// [`part_check`] of the part: lets a requester tell a released part that is genuine
    /// from one a forger made up, holder by holder (absent in records made before requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// The parts a quorum-wrapped key holds (for checks that need no holder: key policies).
pub fn parts_of_record(wrapped: &WrappedKey) -> Result<Vec<Part>> {
    let body: Parts = serde_json::from_slice(&wrapped.ciphertext)
        .map_err(|e| Error::integrity(&wrapped.kek, format!("quorum parts: {e}")))?;
    Ok(body.parts)
}

/// How many parts open a key of `purpose`: one for the repository secret (every holder
/// wraps all of it), the quorum's threshold for everything else.
fn threshold_for(ctx: &Context, quorum: u8) -> u8 {
    if ctx.get("custody:purpose").map(String::as_str) == Some(Purpose::RepositorySecret.as_str()) {
        1
    } else {
        quorum
    }
}

/// What the ciphertext of a quorum-wrapped key holds (compact JSON).
#[derive(Debug, Serialize, Deserialize)]
struct Parts {
    threshold: u8,
    parts: Vec<Part>,
}

struct Holder {
    name: String,
    /// The holder's service, or why it could not be opened (then it takes no part).
    service: std::result::Result<Arc<dyn KeyService>, String>,
}

pub struct Quorum {
    path: PathBuf,
    file: QuorumFile,
    holders: Vec<Holder>,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("path", &self.path)
            .field("threshold", &self.file.threshold)
            .field("holders", &self.holders.len())
            .finish()
    }
}

/// The context of one holder's part: the key's own context, plus which holder and which part.
pub fn part_context(ctx: &Context, holder: &str, x: u8) -> Context {
    let mut c = ctx.clone();
    c.insert("custody:quorum-holder".into(), holder.into());
    c.insert("custody:quorum-part".into(), x.to_string());
    c
}

impl Quorum {
    /// Opens the quorum file and every holder's service; a holder that cannot be opened
    /// (a keyring not here, a token not present) takes no part, and is named when too few do.
    pub fn open(
        path: &Path,
        opts: &KeyServiceOptions,
        rt: &tokio::runtime::Handle,
    ) -> Result<Quorum> {
        let file = QuorumFile::read(path)?;
        let mut holders = Vec::new();
        for h in &file.holders {
            if h.key_service.starts_with("quorum:") {
                return Err(Error::invalid(format!(
                    "quorum file {}: holder {} is itself a quorum (not supported)",
                    path.display(),
                    h.name
                )));
            }
            KeyServiceUrl::parse(&h.key_service)?;
            let service = super::open(&h.key_service, opts, rt).map_err(|e| e.to_string());
            holders.push(Holder {
                name: h.name.clone(),
                service,
            });
        }
        Ok(Quorum {
            path: path.to_path_buf(),
            file,
            holders,
        })
    }

    /// `key create` for a quorum: creates each local holder's keyring where there is none
    /// (other backends create their keys with their own `key create`), then the owner anchor's
    /// parts, written into the quorum file. Returns the file's path.
    pub fn create_keys(
        path: &Path,
        opts: &KeyServiceOptions,
        rt: &tokio::runtime::Handle,
    ) -> Result<PathBuf> {
        let mut file = QuorumFile::read(path)?;
        for h in &file.holders {
            if let KeyServiceUrl::Local(dir) = KeyServiceUrl::parse(&h.key_service)? {
                if !super::LocalKeyring::file_path(&dir).exists() {
                    super::LocalKeyring::create(&dir, opts.passphrase.as_ref())?;
                }
            }
        }
        if file.anchor.is_none() {
            let q = Quorum::open(path, opts, rt)?;
            let secret = Key32::generate()?;
            let parts = rt.block_on(q.wrap_parts(
                Purpose::SessionKey,
                &secret,
                &q.anchor_context(),
                q.threshold(),
            ))?;
            file.anchor = Some(parts);
            file.write(path)?;
        }
        Ok(path.to_path_buf())
    }

    /// `key export --role writer` for a quorum: each local holder's writer keyring goes to
    /// `to/<holder>` (sealed with `sealing` if given), and `to/quorum.json` names them, with
    /// the same threshold and no owner anchor. Holders of other backends keep their URL: give
    /// the writer encrypt-only credentials or a writer token for them. Returns the new file.
    pub fn export_writer(
        path: &Path,
        to: &Path,
        passphrase: Option<&secrecy::SecretString>,
        sealing: Option<&secrecy::SecretString>,
    ) -> Result<PathBuf> {
        let mut file = QuorumFile::read(path)?;
        let out = to.join("quorum.json");
        if out.exists() {
            return Err(Error::AlreadyExists(out.display().to_string()));
        }
        // Every local holder's keyring opened first: nothing is written unless all can be.
        let mut keyrings = Vec::new();
        for (i, h) in file.holders.iter().enumerate() {
            if let KeyServiceUrl::Local(dir) = KeyServiceUrl::parse(&h.key_service)? {
                keyrings.push((i, super::LocalKeyring::open(&dir, passphrase)?));
            }
        }
        for (i, keyring) in keyrings {
            let h = &mut file.holders[i];
            let dest = to.join(&h.name);
            keyring.write_to(&dest, super::KeyringRole::Writer, sealing)?;
            h.key_service = format!("local:{}", dest.display());
        }
        file.anchor = None;
        file.write(&out)?;
        Ok(out)
    }

    /// Calls `f` with every holder's service that could be opened here.
    pub fn for_each_holder_service(&self, mut f: impl FnMut(&dyn KeyService)) {
        for h in &self.holders {
            if let Ok(s) = &h.service {
                f(s.as_ref());
            }
        }
    }

    fn threshold(&self) -> u8 {
        self.file.threshold
    }

    /// The quorum's name in records and `key list`: its threshold and holders, not where its
    /// file happens to be.
    fn reference(&self) -> String {
        let names: Vec<&str> = self.file.holders.iter().map(|h| h.name.as_str()).collect();
        format!(
            "quorum:{}-of-{}:{}",
            self.threshold(),
            names.len(),
            names.join(",")
        )
    }

    fn anchor_context(&self) -> Context {
        let mut c = Context::new();
        c.insert("custody:purpose".into(), "quorum-owner-anchor".into());
        c
    }

    /// Splits `key` into one part per holder, any `threshold` of which recover it, and wraps
    /// each with its holder's KEK. Every holder must take part: a key some holder cannot
    /// unwrap later is a key with less redundancy than the quorum file promises.
    async fn wrap_parts(
        &self,
        purpose: Purpose,
        key: &Key32,
        ctx: &Context,
        threshold: u8,
    ) -> Result<Vec<Part>> {
        let sharks = blahaj::Sharks(threshold.max(2));
        let mut parts = Vec::with_capacity(self.holders.len());
        for (holder, share) in self.holders.iter().zip(sharks.dealer(key.expose())) {
            let mut bytes: Vec<u8> = (&share).into();
            let x = bytes[0];
            // A quorum of one: the part is the key itself.
            let y = if threshold == 1 {
                Some(key.clone())
            } else {
                Key32::from_slice(&bytes[1..])
            };
            bytes.zeroize();
            let y =
                y.ok_or_else(|| Error::Internal("a part of a 32-byte key is 32 bytes".into()))?;
            let service = holder
                .service
                .as_ref()
                .map_err(|why| Error::KeyUnavailable {
                    key: format!("{} (holder {})", self.reference(), holder.name),
                    operation: "Encrypt".into(),
                    reason: format!("every holder wraps its part, and this one cannot: {why}"),
                })?;
            let pctx = part_context(ctx, &holder.name, x);
            let wrapped = service.encrypt(purpose, &y, &pctx).await?;
            parts.push(Part {
                holder: holder.name.clone(),
                x,
                wrapped,
                check: Some(part_check(&pctx, &y)),
            });
        }
        Ok(parts)
    }

    /// Unwraps parts until `threshold` of them open and recovers the key.
    async fn recover(
        &self,
        parts: &[Part],
        ctx: &Context,
        operation: &str,
        threshold: u8,
    ) -> Result<Key32> {
        let need = usize::from(threshold);
        let mut shares = Vec::new();
        let mut took = Vec::new();
        let mut refused = Vec::new();
        let mut tampered = false;
        for part in parts {
            if shares.len() == need {
                break;
            }
            // A part listed twice (the record is the custodian's to edit) counts once.
            if took.contains(&part.holder) {
                continue;
            }
            let Some(holder) = self.holders.iter().find(|h| h.name == part.holder) else {
                refused.push(format!(
                    "{}: not a holder in {}",
                    part.holder,
                    self.path.display()
                ));
                continue;
            };
            let service = match &holder.service {
                Ok(s) => s,
                Err(why) => {
                    refused.push(format!("{}: {why}", holder.name));
                    continue;
                }
            };
            match service
                .decrypt(&part.wrapped, &part_context(ctx, &holder.name, part.x))
                .await
            {
                Ok(y) if threshold == 1 => return Ok(y),
                Ok(y) => {
                    let mut bytes = Vec::with_capacity(33);
                    bytes.push(part.x);
                    bytes.extend_from_slice(y.expose());
                    let share = blahaj::Share::try_from(bytes.as_slice())
                        .map_err(|e| Error::Internal(format!("quorum part: {e}")))?;
                    bytes.zeroize();
                    shares.push(share);
                    took.push(holder.name.clone());
                }
                Err(e) => {
                    tampered |= e.is_integrity();
                    refused.push(format!("{}: {e}", holder.name));
                }
            }
        }
        if shares.len() < need {
            let what = format!(
                "needs {need} of {} holders; {} ({}) took part{}",
                self.holders.len(),
                took.len(),
                if took.is_empty() {
                    "none".to_string()
                } else {
                    took.join(", ")
                },
                if refused.is_empty() {
                    String::new()
                } else {
                    format!("; {}", refused.join("; "))
                }
            );
            return Err(if tampered {
                Error::integrity(self.reference(), what)
            } else {
                Error::KeyDenied {
                    key: self.reference(),
                    operation: operation.into(),
                    reason: what,
                }
            });
        }
        let mut secret = blahaj::Sharks(threshold)
            .recover(&shares)
            .map_err(|e| Error::Internal(format!("quorum recovery: {e}")))?;
        let key = Key32::from_slice(&secret);
        secret.zeroize();
        key.ok_or_else(|| Error::integrity(self.reference(), "the recovered key is not 32 bytes"))
    }

    /// The parts of a quorum-wrapped key, with the threshold this quorum requires of a key of
    /// its purpose (the record's own claim is not trusted: the custodian can edit it). A
    /// repository secret wrapped before quorums of one took the full threshold; that stays
    /// readable.
    fn parts_of(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Parts> {
        if wrapped.algorithm != ALGORITHM {
            return Err(Error::KeyDenied {
                key: wrapped.kek.clone(),
                operation: "Decrypt".into(),
                reason: format!(
                    "this key was wrapped by another key service, not the quorum {}",
                    self.path.display()
                ),
            });
        }
        let body: Parts = serde_json::from_slice(&wrapped.ciphertext)
            .map_err(|e| Error::integrity(&wrapped.kek, format!("quorum parts: {e}")))?;
        let expected = threshold_for(ctx, self.threshold());
        if body.threshold != expected && body.threshold != self.threshold() {
            return Err(Error::integrity(
                &wrapped.kek,
                format!(
                    "wrapped for a quorum of {}, this one needs {expected}",
                    body.threshold
                ),
            ));
        }
        Ok(body)
    }

    async fn wrap(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        let threshold = threshold_for(ctx, self.threshold());
        let parts = self.wrap_parts(purpose, key, ctx, threshold).await?;
        let body = Parts { threshold, parts };
        Ok(WrappedKey {
            kek: self.reference(),
            algorithm: ALGORITHM.into(),
            ciphertext: serde_json::to_vec(&body).expect("parts serialize"),
        })
    }
}

#[async_trait]
impl KeyService for Quorum {
    fn url(&self) -> String {
        format!("quorum:{}", self.path.display())
    }

    async fn generate_data_key(
        &self,
        purpose: Purpose,
        ctx: &Context,
    ) -> Result<(Key32, WrappedKey)> {
        let key = Key32::generate()?;
        let wrapped = self.wrap(purpose, &key, ctx).await?;
        Ok((key, wrapped))
    }

    async fn decrypt(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Key32> {
        let body = self.parts_of(wrapped, ctx)?;
        self.recover(&body.parts, ctx, "Decrypt", body.threshold)
            .await
    }

    async fn encrypt(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        self.wrap(purpose, key, ctx).await
    }

    async fn describe(&self) -> Result<Vec<KekInfo>> {
        let reachable = self.holders.iter().filter(|h| h.service.is_ok()).count();
        let mut out = vec![KekInfo {
            reference: self.reference(),
            purpose: super::KekPurpose::MetaAndData,
            algorithm: ALGORITHM.into(),
            created: None,
            can_decrypt: reachable >= usize::from(self.threshold()),
            token_serial: None,
            public_key_sha256: None,
        }];
        for h in &self.holders {
            match &h.service {
                Ok(s) => {
                    for mut k in s.describe().await? {
                        k.reference = format!("{}: {}", h.name, k.reference);
                        out.push(k);
                    }
                }
                Err(why) => tracing::warn!(holder = %h.name, "holder not reachable: {why}"),
            }
        }
        Ok(out)
    }

    async fn owner_anchor(&self, repo: &Id) -> Result<(Key32, String)> {
        let Some(parts) = &self.file.anchor else {
            return Err(Error::KeyDenied {
                key: self.reference(),
                operation: "owner-anchor".into(),
                reason: format!(
                    "the quorum file has no owner anchor (a writer's file, or `custody key \
                     create --key-service quorum:{}` was not run)",
                    self.path.display()
                ),
            });
        };
        let secret = self
            .recover(
                parts,
                &self.anchor_context(),
                "owner-anchor",
                self.threshold(),
            )
            .await?;
        let anchor = crate::crypto::kdf::derive_key(repo.as_bytes(), &secret, &[ANCHOR_LABEL]);
        Ok((anchor, self.reference()))
    }
}
