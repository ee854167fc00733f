//! Releasing parts for restore requests (docs/FORMAT.md §19): one holder unwraps only its
//! own part; the requester combines released parts, each checked against the wrapped key.

use std::path::Path;

use zeroize::Zeroize;

use super::{part_context, Quorum};
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::wrapped::{Context, WrappedKey};

/// SHA-256 of a label, the part's context and its 32 bytes `y`, in hex. `y` is uniformly
/// random (one Shamir share of a random key), so its hash tells nothing about it.
pub fn part_check(part_ctx: &Context, y: &Key32) -> String {
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    d.update(b"custody/v2/quorum-part-check");
    d.update(&crate::format::wrapped::context_bytes(part_ctx));
    d.update(y.expose());
    hex::encode(d.finish().as_ref())
}

impl Quorum {
    /// The quorum file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many holders must take part.
    pub fn required(&self) -> u8 {
        self.threshold()
    }

    /// Every holder's name, in the file's order.
    pub fn holder_names(&self) -> Vec<String> {
        self.holders.iter().map(|h| h.name.clone()).collect()
    }

    /// The holders whose key service could be opened here: who this client can act as.
    pub fn present_holders(&self) -> Vec<String> {
        self.holders
            .iter()
            .filter(|h| h.service.is_ok())
            .map(|h| h.name.clone())
            .collect()
    }

    /// One holder's own part of a key (`x` and `y`), unwrapped by that holder's service alone:
    /// what an approval releases. Nothing else is unwrapped.
    pub async fn holder_part(
        &self,
        holder: &str,
        wrapped: &WrappedKey,
        ctx: &Context,
    ) -> Result<(u8, Key32)> {
        let body = self.parts_of(wrapped, ctx)?;
        let part = body
            .parts
            .iter()
            .find(|p| p.holder == holder)
            .ok_or_else(|| {
                Error::integrity(&wrapped.kek, format!("no part for holder {holder}"))
            })?;
        let service = self
            .holders
            .iter()
            .find(|h| h.name == holder)
            .and_then(|h| h.service.as_ref().ok())
            .ok_or_else(|| Error::KeyUnavailable {
                key: format!("{} (holder {holder})", self.reference()),
                operation: "Decrypt".into(),
                reason: "this holder's key service is not available here".into(),
            })?;
        let y = service
            .decrypt(&part.wrapped, &part_context(ctx, holder, part.x))
            .await?;
        Ok((part.x, y))
    }

    /// Recovers a key from parts released by holders (a restore request's approvals), each
    /// checked against the part's check value in the wrapped key when it has one: a part
    /// that does not match is left out and named, never turned into a wrong key.
    pub fn combine(
        &self,
        wrapped: &WrappedKey,
        ctx: &Context,
        released: &[(String, u8, Key32)],
    ) -> Result<Key32> {
        let body = self.parts_of(wrapped, ctx)?;
        let need = usize::from(body.threshold);
        let mut shares = Vec::new();
        let mut took: Vec<&str> = Vec::new();
        let mut refused = Vec::new();
        for (holder, x, y) in released {
            if took.contains(&holder.as_str()) || shares.len() == need {
                continue;
            }
            let Some(part) = body.parts.iter().find(|p| &p.holder == holder && p.x == *x) else {
                refused.push(format!(
                    "{holder}: a part (x = {x}) the wrapped key does not have"
                ));
                continue;
            };
            if let Some(check) = &part.check {
                let found = part_check(&part_context(ctx, holder, *x), y);
                if !bool::from(subtle::ConstantTimeEq::ct_eq(
                    found.as_bytes(),
                    check.as_bytes(),
                )) {
                    refused.push(format!(
                        "{holder}: not the part it holds (a forged or altered approval)"
                    ));
                    continue;
                }
            }
            let mut bytes = Vec::with_capacity(33);
            bytes.push(*x);
            bytes.extend_from_slice(y.expose());
            let share = blahaj::Share::try_from(bytes.as_slice())
                .map_err(|e| Error::Internal(format!("quorum part: {e}")))?;
            bytes.zeroize();
            shares.push(share);
            took.push(holder);
        }
        if shares.len() < need {
            let why = format!(
                "needs parts of {need} holders; {} released ({}){}",
                took.len(),
                if took.is_empty() {
                    "none".into()
                } else {
                    took.join(", ")
                },
                if refused.is_empty() {
                    String::new()
                } else {
                    format!("; refused: {}", refused.join("; "))
                }
            );
            return Err(if refused.is_empty() {
                Error::KeyDenied {
                    key: self.reference(),
                    operation: "Decrypt".into(),
                    reason: why,
                }
            } else {
                Error::integrity(&wrapped.kek, why)
            });
        }
        let mut secret = blahaj::Sharks(body.threshold)
            .recover(&shares)
            .map_err(|e| Error::Internal(format!("quorum recovery: {e}")))?;
        let key = Key32::from_slice(&secret);
        secret.zeroize();
        key.ok_or_else(|| Error::integrity(self.reference(), "the recovered key is not 32 bytes"))
    }
}
