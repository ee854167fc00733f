//! `key list`: the KEKs a key service holds and the wrapped keys in the repository that name
//! each (so a rotation script can see what still depends on an old KEK). Needs no key: the
//! records are read, not unwrapped, so a writer can run it.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::blocking::{BlockingKeys, BlockingStore};
use crate::error::Result;
use crate::format::config::Config;
use crate::format::wrapped::WrappedKeyRecord;
use crate::keyservice::KekPurpose;
use crate::store::FileKind;

/// What the key service says about one of its KEKs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KekDetails {
    pub purpose: KekPurpose,
    pub algorithm: String,
    pub created: Option<DateTime<Utc>>,
    pub age_days: Option<i64>,
    pub can_decrypt: bool,
    /// The PKCS#11 token's serial number (what key policies name, docs/FORMAT.md §20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
}

/// One row of `key list`: a KEK and how many wrapped keys name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KekUsage {
    pub kek: String,
    /// `None` for a KEK that records name but this key service does not hold.
    #[serde(flatten)]
    pub details: Option<KekDetails>,
    pub wrapped_keys: u64,
    pub oldest_wrapped: Option<DateTime<Utc>>,
    pub in_key_service: bool,
}

/// The rows of `key list`, the key service's own KEKs first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KekTable(pub Vec<KekUsage>);

/// Counts the wrapped keys (the config's secret and every `keys/*` record) per KEK. Records
/// that do not parse are skipped and named in `unreadable`.
pub fn kek_usage(
    store: &BlockingStore,
    keys: &BlockingKeys,
    config: &Config,
    unreadable: &mut Vec<String>,
) -> Result<KekTable> {
    let keks = keys.describe()?;
    let mut counts: BTreeMap<String, (u64, Option<DateTime<Utc>>)> = BTreeMap::new();
    let mut bump = |r: &WrappedKeyRecord| {
        let e = counts.entry(r.wrapped.kek.clone()).or_insert((0, None));
        e.0 += 1;
        e.1 = Some(e.1.map_or(r.created, |t| t.min(r.created)));
    };
    bump(&config.secret);
    for (id, _) in store.list(FileKind::Key)? {
        let b = store.get(FileKind::Key, &id)?;
        match serde_json::from_slice::<WrappedKeyRecord>(&b) {
            Ok(r) => bump(&r),
            Err(e) => unreadable.push(format!("keys/{id}: unreadable record: {e}")),
        }
    }
    let now = Utc::now();
    let mut rows = Vec::new();
    for k in keks {
        let (n, oldest) = counts.remove(&k.reference).unwrap_or((0, None));
        rows.push(KekUsage {
            kek: k.reference,
            details: Some(KekDetails {
                purpose: k.purpose,
                algorithm: k.algorithm,
                created: k.created,
                age_days: k.created.map(|c| (now - c).num_days()),
                can_decrypt: k.can_decrypt,
                token_serial: k.token_serial,
            }),
            wrapped_keys: n,
            oldest_wrapped: oldest,
            in_key_service: true,
        });
    }
    for (kek, (n, oldest)) in counts {
        rows.push(KekUsage {
            kek,
            details: None,
            wrapped_keys: n,
            oldest_wrapped: oldest,
            in_key_service: false,
        });
    }
    Ok(KekTable(rows))
}

impl fmt::Display for KekTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.0 {
            let purpose = r.details.as_ref().map_or("?".to_string(), |d| {
                serde_json::to_value(d.purpose)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            });
            let age = r
                .details
                .as_ref()
                .and_then(|d| d.age_days)
                .map_or("null".to_string(), |d| d.to_string());
            writeln!(
                f,
                "{:<42} {:<5} wrapped keys: {} age: {} days{}{}",
                r.kek,
                purpose,
                r.wrapped_keys,
                age,
                if r.details.as_ref().is_some_and(|d| !d.can_decrypt) {
                    "  (public half only: cannot decrypt)"
                } else {
                    ""
                },
                if r.in_key_service {
                    ""
                } else {
                    "  (not in this key service)"
                },
            )?;
        }
        Ok(())
    }
}
