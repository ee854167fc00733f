//! Verifying the copies a sweep relies on. An index segment is only a claim: a writer holds
//! the index key and can list any blob in any pack. Before a sweep deletes the last copy of a
//! needed blob that it knows of outside a condemned pack, it reads that other copy and checks
//! it as a reader would (commitment, AEAD, decompression, HMAC of the plaintext = chunk id).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SessionId};
use crate::pack::BlobEntry;
use crate::repo::activity::Activity;
use crate::repo::lock::Lock;
use crate::repo::{Repository, MAX_PACK};
use crate::store::FileKind;

/// Reads and verifies `copies`, one ranged read per pack. Returns those that do not verify
/// (a missing pack, a wrong session or one whose key the service refuses, a blob that does not
/// open or does not hash to its id). An unreachable key service and store failures stop it: a
/// copy that could not be read is not known bad.
pub fn verify_copies(
    repo: &Repository,
    copies: &[(PackId, SessionId, BlobEntry)],
    lock: &mut Option<Lock<'_>>,
    act: &Activity,
) -> Result<Vec<(PackId, BlobId)>> {
    let mut by_pack: BTreeMap<PackId, Vec<(SessionId, BlobEntry)>> = BTreeMap::new();
    for (p, s, e) in copies {
        by_pack.entry(*p).or_default().push((*s, *e));
    }
    let mut bad = Vec::new();
    let total = by_pack.len();
    for (n, (pack, entries)) in by_pack.into_iter().enumerate() {
        act.set(format!("verifying copies in pack {}/{total}", n + 1));
        if let Some(l) = lock.as_mut() {
            l.refresh()?;
        }
        let start = entries
            .iter()
            .map(|(_, e)| e.offset as u64)
            .min()
            .unwrap_or(0);
        let end = entries
            .iter()
            .map(|(_, e)| e.offset as u64 + e.length as u64)
            .max()
            .unwrap_or(0);
        let span = if end - start > MAX_PACK {
            Err(Error::integrity("", "listed span larger than any pack"))
        } else {
            repo.store()
                .get_range(FileKind::Pack, &pack, start, end - start)
        };
        let bytes = match span {
            Ok(b) => b,
            Err(e) if e.is_integrity() || matches!(e, Error::NotFound(_) | Error::Invalid(_)) => {
                bad.extend(entries.iter().map(|(_, e)| (pack, e.id)));
                continue;
            }
            Err(e) => return Err(e),
        };
        for (session, e) in &entries {
            let a = (e.offset as u64 - start) as usize;
            let sealed = &bytes[a..a + e.length as usize];
            match repo.open_blob(&pack, session, e, sealed) {
                Ok(_) => {}
                // A session key the service refuses (a forged record naming a KEK it does
                // not hold) is as good as no copy: not relied on. An unreachable service
                // stops the run instead.
                Err(err)
                    if err.is_integrity()
                        || matches!(err, Error::NotFound(_) | Error::KeyDenied { .. }) =>
                {
                    bad.push((pack, e.id))
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(bad)
}
