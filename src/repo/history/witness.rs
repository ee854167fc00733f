//! A witness (docs/FORMAT.md §18.4): a store outside the custodian's reach (a local folder,
//! or a bucket at another provider) where clients leave signed records of the history they
//! saw, so that a client without its own state still notices a rollback.

use std::sync::Arc;

use bytes::Bytes;

use crate::blocking::BlockingStore;
use crate::crypto::signing::SigningKey;
use crate::error::{Error, Result};
use crate::format::history::{witness_object, Observation, WitnessRecord};
use crate::id::{ChainId, Id, SignerId};
use crate::store::{FileKind, Store};

/// A witness store.
#[derive(Debug, Clone)]
pub struct Witness {
    store: BlockingStore,
}

impl Witness {
    pub fn new(rt: tokio::runtime::Handle, store: Arc<dyn Store>) -> Witness {
        Witness {
            store: BlockingStore::new(rt, store),
        }
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// What the witness attests for `repo`: the owner's records count in full; a writer's
    /// record only for that writer's own chains (`is_owner` says whom to believe fully, and
    /// `may_sign` whether a signer is one at all). Records that do not verify are skipped
    /// with a warning: a writer may write here, and must not be able to blind a reader.
    pub fn read(
        &self,
        repo: &Id,
        is_owner: impl Fn(&SignerId) -> bool,
        may_sign: impl Fn(&SignerId) -> bool,
    ) -> Result<Observation> {
        let mut out = Observation::default();
        for (id, _) in self.store.list(FileKind::Witness)? {
            let bytes = match self.store.get(FileKind::Witness, &id) {
                Ok(b) => b,
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let Ok(rec) = serde_json::from_slice::<WitnessRecord>(&bytes) else {
                tracing::warn!("witness record {id} is not one: skipped");
                continue;
            };
            if &rec.repository != repo {
                continue;
            }
            let obs = match rec.verify(repo) {
                Ok(o) if may_sign(&rec.signer) => o,
                Ok(_) => {
                    tracing::warn!(
                        "witness record {id} is signed by {}, whom this repository does not know: skipped",
                        rec.signer.short()
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!("witness record {id} skipped: {e}");
                    continue;
                }
            };
            if is_owner(&rec.signer) {
                out.merge(&obs);
            } else {
                for t in obs.tips.iter().filter(|t| t.signer == rec.signer) {
                    out.raise(*t);
                }
            }
        }
        Ok(out)
    }

    /// Stores `obs`, signed by `key`, as the record of `key` for `chain` (the owner's overall
    /// observation uses no chain). Each client writes only its own records, so concurrent
    /// clients do not overwrite each other's.
    pub fn publish(
        &self,
        key: &SigningKey,
        repo: &Id,
        chain: Option<&ChainId>,
        obs: &Observation,
    ) -> Result<()> {
        let rec = WitnessRecord::sign(key, repo, obs);
        let json = serde_json::to_vec_pretty(&rec).expect("plain data serializes");
        self.store.put(
            FileKind::Witness,
            &witness_object(repo, &key.id(), chain),
            Bytes::from(json),
        )
    }
}
