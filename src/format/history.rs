//! Tamper-evident history (docs/FORMAT.md §18): the link each snapshot manifest carries in
//! its client's chain, the owner's checkpoints, and the signed witness records. Pure codecs
//! and signatures; no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::signing::{self, SigningKey};
use crate::id::{ChainId, CheckpointId, Id, SignerId, SnapshotId};

use super::DecodeError;

const WITNESS_LABEL: &[u8] = b"custody/v2/witness";

/// A manifest's place in its chain: the `seq`-th snapshot its client made under one signer,
/// following `prev` (the chain's previous snapshot; `None` for the first). Inside the signed,
/// id-bound manifest, so neither the custodian nor another writer can move it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub chain: ChainId,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<SnapshotId>,
}

/// The newest snapshot of one chain: `snapshot` is its `seq`-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tip {
    pub signer: SignerId,
    pub chain: ChainId,
    pub seq: u64,
    pub snapshot: SnapshotId,
}

/// `history/<id>`: what the owner's `forget` (or an accepted rollback) left. Sealed under the
/// index key and signed by the owner. `chains` holds every chain's tip as the owner saw it;
/// `live` the snapshots of those chains, up to those tips, that still exist. A snapshot of a
/// chain above its tip here is newer than the checkpoint and live; one at or below it that
/// is not in `live` was forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    /// One more than the checkpoint it replaces (1 for the first).
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<CheckpointId>,
    pub time: DateTime<Utc>,
    pub chains: Vec<Tip>,
    pub live: Vec<SnapshotId>,
}

/// What a client has verified, or a witness attests: the newest checkpoint and every
/// chain's newest tip. Readers never accept less (docs/FORMAT.md §18.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    #[serde(default)]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointId>,
    #[serde(default)]
    pub tips: Vec<Tip>,
}

impl Observation {
    /// Raises this observation to include `other`: the higher generation, and per chain the
    /// higher tip. Never lowers anything.
    pub fn merge(&mut self, other: &Observation) {
        if other.generation > self.generation {
            self.generation = other.generation;
            self.checkpoint = other.checkpoint;
        }
        for t in &other.tips {
            self.raise(*t);
        }
    }

    /// Records `t` unless this chain's known tip is already as high.
    pub fn raise(&mut self, t: Tip) {
        match self
            .tips
            .iter_mut()
            .find(|k| k.signer == t.signer && k.chain == t.chain)
        {
            Some(k) if k.seq >= t.seq => {}
            Some(k) => *k = t,
            None => self.tips.push(t),
        }
    }

    /// The known tip of one chain.
    pub fn tip(&self, signer: &SignerId, chain: &ChainId) -> Option<&Tip> {
        self.tips
            .iter()
            .find(|k| &k.signer == signer && &k.chain == chain)
    }

    /// True when `self` knows something `other` does not (so a witness needs writing).
    pub fn exceeds(&self, other: &Observation) -> bool {
        let mut m = other.clone();
        m.merge(self);
        &m != other
    }
}

/// A record kept in a witness (docs/FORMAT.md §18.4): an observation, as JSON text, signed by
/// the repository's owner (which may attest any chain) or a writer (which may attest only its
/// own chains). Plaintext: it holds only ids and counters the custodian sees anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WitnessRecord {
    pub format: u32,
    pub repository: Id,
    pub signer: SignerId,
    /// The [`Observation`] as JSON; signed as these exact bytes.
    pub observation: String,
    pub signature: String,
}

fn witness_message(repo: &Id, signer: &SignerId, observation: &str) -> Vec<u8> {
    [
        WITNESS_LABEL,
        repo.as_bytes(),
        signer.as_bytes(),
        &(observation.len() as u64).to_le_bytes(),
        observation.as_bytes(),
    ]
    .concat()
}

impl WitnessRecord {
    pub fn sign(key: &SigningKey, repo: &Id, obs: &Observation) -> WitnessRecord {
        let observation = serde_json::to_string(obs).expect("plain data serializes");
        let signature = hex::encode(key.sign(&witness_message(repo, &key.id(), &observation)));
        WitnessRecord {
            format: 1,
            repository: *repo,
            signer: key.id(),
            observation,
            signature,
        }
    }

    /// The observation, once the signature verifies for `repo`. Whether the signer may attest
    /// each tip is the caller's decision.
    pub fn verify(&self, repo: &Id) -> Result<Observation, DecodeError> {
        if self.format != 1 {
            return Err(DecodeError::Version {
                what: "witness record",
                found: self.format,
                expected: 1,
            });
        }
        if &self.repository != repo {
            return Err("witness record of another repository".into());
        }
        let sig = hex::decode(&self.signature).map_err(|_| "witness signature is not hex")?;
        if !signing::verify(
            &self.signer,
            &witness_message(repo, &self.signer, &self.observation),
            &sig,
        ) {
            return Err("witness record signature does not verify".into());
        }
        super::from_json("witness observation", self.observation.as_bytes())
    }
}

/// The name a witness record is stored under: one per repository, signer and chain (none
/// for the owner's overall observation), so clients do not overwrite each other's records.
pub fn witness_object(repo: &Id, signer: &SignerId, chain: Option<&ChainId>) -> Id {
    let chain = chain.map_or([0u8; 32], |c| *c.as_bytes());
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        &[WITNESS_LABEL, repo.as_bytes(), signer.as_bytes(), &chain].concat(),
    );
    Id::from_slice(d.as_ref()).expect("SHA-256 is 32 bytes")
}

/// A client's own state for one repository (`history/<repository>.json` in its config
/// folder): what it has verified, and the chains it extends (one per signer it backs up as).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientState {
    pub format: u32,
    /// This client's own name for its witness record (random, made once): two key holders'
    /// machines keep separate records instead of overwriting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ChainId>,
    #[serde(default)]
    pub seen: Observation,
    #[serde(default)]
    pub own: Vec<OwnChain>,
}

/// The chain this client extends when it backs up as `signer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnChain {
    pub signer: SignerId,
    pub chain: ChainId,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tip(signer: u8, chain: u8, seq: u64) -> Tip {
        Tip {
            signer: SignerId(Id([signer; 32])),
            chain: ChainId(Id([chain; 32])),
            seq,
            snapshot: SnapshotId(Id([seq as u8; 32])),
        }
    }

    #[test]
    fn observations_only_move_forward() {
        let mut a = Observation::default();
        a.raise(tip(1, 1, 5));
        a.raise(tip(1, 1, 3));
        a.raise(tip(1, 2, 1));
        assert_eq!(
            a.tip(&tip(1, 1, 0).signer, &tip(1, 1, 0).chain)
                .unwrap()
                .seq,
            5
        );
        let mut b = Observation {
            generation: 2,
            checkpoint: Some(CheckpointId(Id([9; 32]))),
            tips: vec![tip(1, 1, 7)],
        };
        assert!(b.exceeds(&a) && a.exceeds(&b));
        b.merge(&a);
        assert_eq!((b.generation, b.tips.len()), (2, 2));
        assert!(!a.exceeds(&b));
        a.merge(&Observation::default());
        assert_eq!(a.generation, 0);
    }

    #[test]
    fn witness_records_verify_and_fail_cases() {
        let k = SigningKey::generate().unwrap();
        let repo = Id([3; 32]);
        let obs = Observation {
            generation: 1,
            checkpoint: None,
            tips: vec![tip(1, 1, 2)],
        };
        let rec = WitnessRecord::sign(&k, &repo, &obs);
        assert_eq!(rec.verify(&repo).unwrap(), obs);
        // fail_: another repository, an edited observation, another signer, bad hex.
        assert!(rec.verify(&Id([4; 32])).is_err());
        let mut r = rec.clone();
        r.observation = r.observation.replace("\"seq\":2", "\"seq\":9");
        assert!(r.verify(&repo).is_err());
        let mut r = rec.clone();
        r.signer = SigningKey::generate().unwrap().id();
        assert!(r.verify(&repo).is_err());
        let mut r = rec;
        r.signature = "zz".into();
        assert!(r.verify(&repo).is_err());
        assert_ne!(
            witness_object(&repo, &k.id(), None),
            witness_object(&Id([4; 32]), &k.id(), None)
        );
    }
}
