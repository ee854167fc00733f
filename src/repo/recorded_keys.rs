//! The KMS keys a repository's own records name, for a client given no key service and
//! holding no local keyring of the repository: the meta key wraps the config's secret, a
//! session's record names the data key, and the owner record names the key that makes the
//! owner anchor (docs/FORMAT.md §11.2). Names read from the store are not authenticated, so
//! the service built from them is used to read only (`keyservice::read_only`).

use std::path::Path;
use std::sync::Arc;

use crate::blocking::block_on;
use crate::error::Result;
use crate::format::config::Config;
use crate::format::provenance::OwnerRecord;
use crate::format::wrapped::{Purpose, WrappedKeyRecord};
use crate::id::Id;
use crate::store::{FileKind, Store};

const KMS: &str = "awskms:";

/// The `awskms:` URL the records name, or `None` when the repository's secret is not wrapped
/// by AWS KMS. `owner_copy` is this client's pinned copy of the owner record, preferred over
/// the stored one.
pub fn recorded_kms_url(
    rt: &tokio::runtime::Handle,
    store: &Arc<dyn Store>,
    config: &Config,
    owner_copy: Option<&Path>,
) -> Result<Option<String>> {
    let Some(meta) = config.secret.wrapped.kek.strip_prefix(KMS) else {
        return Ok(None);
    };
    // The data key: the first session record wrapped by KMS (none yet: only the secret
    // opens, and the meta key stands in, which no session record names).
    let mut data = None;
    for (id, _) in block_on(rt, store.list(FileKind::Key))? {
        let Ok(bytes) = block_on(rt, store.get(FileKind::Key, &id)) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<WrappedKeyRecord>(&bytes) else {
            continue;
        };
        if rec.purpose == Purpose::SessionKey {
            if let Some(k) = rec.wrapped.kek.strip_prefix(KMS) {
                data = Some(k.to_string());
                break;
            }
        }
    }
    let owner_bytes = match owner_copy.and_then(|p| std::fs::read(p).ok()) {
        Some(b) => Some(b),
        None => block_on(rt, store.get(FileKind::Owner, &Id::default()))
            .ok()
            .map(|b| b.to_vec()),
    };
    let owner = owner_bytes
        .and_then(|b| serde_json::from_slice::<OwnerRecord>(&b).ok())
        .and_then(|r| r.anchor.strip_prefix(KMS).map(str::to_string));
    let mut url = format!("{KMS}{}?meta={meta}", data.as_deref().unwrap_or(meta));
    if let Some(o) = owner {
        url.push_str(&format!("&owner={o}"));
    }
    Ok(Some(url))
}
