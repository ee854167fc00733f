//! `init`: create a repository, and a local keyring when none exists.

use super::{Ctx, Outcome};
use custody::chunker::ChunkerParams;
use custody::error::{Error, Result};
use custody::format::retention::RetentionRecord;
use custody::id::Id;
use custody::keyservice::{self, KeyServiceUrl, LocalKeyring};
use custody::repo::{InitOptions, Repository, DEFAULT_COMPRESSION, DEFAULT_PACK_SIZE};
use custody::store::object_lock::LockMode;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// zstd level for new data (0 stores raw).
    #[arg(long, default_value_t = DEFAULT_COMPRESSION, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub compression_level: i32,
    /// Target pack size in MiB (16 to 32 suits most buckets).
    #[arg(long, default_value_t = DEFAULT_PACK_SIZE / (1024 * 1024))]
    pub pack_size_mib: u32,
    /// Average chunk size in KiB (a power of two; min is a quarter, max four times).
    #[arg(long, default_value_t = ChunkerParams::DEFAULT.avg_size / 1024)]
    pub chunk_avg_kib: u32,
    /// Record this key policy (where KEKs may be) and refuse a key service outside it
    /// (docs/FORMAT.md §20; see README, "Key policies").
    #[arg(long, value_name = "FILE")]
    pub key_policy: Option<std::path::PathBuf>,
    /// Lock every object for at least N days with S3 Object Lock (an s3:// bucket: made with
    /// Object Lock when missing, refused when it exists without it). See README, "Immutable
    /// backups".
    #[arg(long, value_name = "N")]
    pub object_lock_days: Option<u32>,
    /// governance (a role with s3:BypassGovernanceRetention can still delete) or compliance
    /// (no one can until the date).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "governance",
        requires = "object_lock_days"
    )]
    pub object_lock_mode: String,
}

/// Prepares the bucket for Object Lock and returns the settings every write asks for.
fn prepare_lock(
    ctx: &Ctx,
    store: &dyn custody::store::Store,
    days: u32,
    mode: &str,
) -> Result<RetentionRecord> {
    let mode = LockMode::parse(mode)?;
    let lock = store.object_lock().ok_or_else(|| {
        Error::invalid(format!(
            "--object-lock-days needs an S3 bucket (s3://BUCKET/PREFIX); {} is a folder",
            store.location()
        ))
    })?;
    let b = ctx.rt.block_on(lock.bucket_lock())?;
    let b = if b.exists {
        b
    } else {
        ctx.rt.block_on(lock.create_locked_bucket())?;
        // A server may make the bucket and ignore the request for Object Lock.
        ctx.rt.block_on(lock.bucket_lock())?
    };
    if b.lock_enabled && b.versioning && b.default.is_none() {
        ctx.rt.block_on(lock.set_default_retention(mode, days))?;
    }
    if !b.lock_enabled || !b.versioning {
        return Err(Error::invalid(format!(
            "the bucket of {} has {}: S3 turns Object Lock on when a bucket is made; name a new \
             bucket (init makes it with Object Lock) or make one with `aws s3api create-bucket \
             --object-lock-enabled-for-bucket` (README, \"Immutable backups\")",
            store.location(),
            match (b.lock_enabled, b.versioning) {
                (false, false) => "neither Object Lock nor versioning",
                (false, true) => "versioning but no Object Lock",
                _ => "Object Lock but versioning is off",
            }
        )));
    }
    let rec = RetentionRecord {
        format: custody::format::REPO_FORMAT,
        mode,
        days: days.max(1),
        conditional_writes: ctx.rt.block_on(lock.probe_conditional_writes())?,
        set: chrono::Utc::now(),
    };
    // The config, owner and key records written next are locked too.
    lock.configure(Some(rec.settings()));
    Ok(rec)
}

pub fn run(ctx: &Ctx, args: &Args) -> Result<Outcome> {
    let policy = args
        .key_policy
        .as_deref()
        .map(super::key_policy::read_file)
        .transpose()?;
    let store = ctx.store()?;
    let retention = args
        .object_lock_days
        .map(|d| prepare_lock(ctx, store.as_ref(), d, &args.object_lock_mode))
        .transpose()?;
    ctx.rt.block_on(store.create())?;
    // Every bucket: whether the server refuses to replace an object under If-None-Match.
    let retention = match (retention, store.object_lock()) {
        (None, Some(lock)) => {
            let rec = RetentionRecord {
                format: custody::format::REPO_FORMAT,
                mode: LockMode::Governance,
                days: 0,
                conditional_writes: ctx.rt.block_on(lock.probe_conditional_writes())?,
                set: chrono::Utc::now(),
            };
            lock.configure(Some(rec.settings()));
            Some(rec)
        }
        (r, _) => r,
    };
    let repo_id = Id::random()?;
    let url = ctx.key_service_url(&repo_id);
    let mut created_keyring = None;
    let keys = match KeyServiceUrl::parse(&url)? {
        KeyServiceUrl::Local(dir) if !LocalKeyring::file_path(&dir).exists() => {
            let pass = ctx.new_passphrase()?;
            let k = LocalKeyring::create(&dir, pass.as_ref())?;
            created_keyring = Some((dir, pass.is_some()));
            std::sync::Arc::new(k) as std::sync::Arc<dyn keyservice::KeyService>
        }
        _ => keyservice::open(&url, &ctx.key_options(&url)?, ctx.rt.handle())?,
    };
    let avg = args.chunk_avg_kib.saturating_mul(1024);
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg.saturating_mul(4),
        },
        compression_level: args.compression_level,
        pack_size: args.pack_size_mib.saturating_mul(1024 * 1024),
    };
    if let Some(p) = &policy {
        super::key_policy::check_service(ctx, p, &url, keys.as_ref())?;
        // Only the owner signs a policy: a service that cannot be the owner makes none.
        ctx.rt.block_on(keys.owner_anchor(&repo_id))?;
    }
    // A PKCS#11 data key is pinned in the repository's policy from the start: a key put on a
    // writer token later (by whoever has its PIN) is never used (docs/FORMAT.md §20).
    let policy = if url.starts_with("pkcs11:") || url.starts_with("quorum:") {
        super::key_policy::pin_pkcs11(ctx, policy, keys.as_ref(), &repo_id)?
    } else {
        policy
    };
    let mut repo = Repository::init(ctx.rt.handle().clone(), store, keys, repo_id, &opts)?;
    if let Some(p) = policy {
        let copy = ctx.owner_copy(&repo_id);
        repo.set_key_policy(p, Some(&copy))?;
    }
    if let Some(r) = &retention {
        repo.set_retention(r, false)?;
    }
    ctx.emit(&custody::repo::InitOutput {
        repository_id: repo.id(),
        location: repo.store().location(),
        key_service: repo.key_service().url(),
        keyring_created: created_keyring.is_some(),
        keyring_sealed: created_keyring.as_ref().is_some_and(|(_, sealed)| *sealed),
        keyring_dir: created_keyring.map(|(dir, _)| dir),
        object_lock: retention,
    });
    Ok(Outcome::OK)
}
