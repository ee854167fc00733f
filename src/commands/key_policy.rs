//! `key policy show|set`, and the `--key-policy FILE` checks of `init` and `key create`
//! (docs/FORMAT.md §20).

use std::path::{Path, PathBuf};

use super::{Ctx, Outcome};
use custody::error::{Error, Result};
use custody::keyservice::policy::KeyPolicy;
use custody::keyservice::KeyService;
use custody::repo::policy::read_key_policy;
use custody::repo::Repository;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// Print the repository's key policy, verified against the owner's signature.
    Show,
    /// Set the key policy (the owner: M holders of a quorum together). Every wrapped key in
    /// the repository must already be inside it.
    Set {
        /// The policy, JSON (see README, "Key policies").
        file: PathBuf,
    },
}

/// Reads a policy file given on the command line.
pub fn read_file(path: &Path) -> Result<KeyPolicy> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
    KeyPolicy::parse(&bytes, &path.display().to_string())
}

/// Checks a key service against a policy, as it describes its KEKs.
pub fn check_service(
    ctx: &Ctx,
    policy: &KeyPolicy,
    url: &str,
    keys: &dyn KeyService,
) -> Result<()> {
    policy.check_url(url)?;
    let keks = ctx.rt.block_on(keys.describe())?;
    policy.check_described(url, &keks)
}

/// `policy` with the fingerprints of the service's PKCS#11 data keys added when it pins none
/// yet (a new policy when there is none), if the service can act as the owner (only the
/// owner signs a policy); otherwise `policy` unchanged.
pub fn pin_pkcs11(
    ctx: &Ctx,
    policy: Option<KeyPolicy>,
    keys: &dyn KeyService,
    repo: &custody::Id,
) -> Result<Option<KeyPolicy>> {
    let found: Vec<String> = ctx
        .rt
        .block_on(keys.describe())?
        .into_iter()
        .filter_map(|k| k.public_key_sha256)
        .collect();
    if found.is_empty() || ctx.rt.block_on(keys.owner_anchor(repo)).is_err() {
        return Ok(policy);
    }
    let mut p = policy.unwrap_or(KeyPolicy {
        format: 1,
        ..Default::default()
    });
    if p.pkcs11.data_key_sha256.is_empty() {
        p.pkcs11.data_key_sha256 = found;
    }
    Ok(Some(p))
}

#[derive(serde::Serialize)]
struct Shown {
    policy: Option<KeyPolicy>,
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.policy {
            None => write!(f, "no key policy: keys may be anywhere"),
            Some(p) => write!(
                f,
                "key policy (signed by the owner):\n{}",
                serde_json::to_string_pretty(p).map_err(|_| std::fmt::Error)?
            ),
        }
    }
}

pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<Outcome> {
    match cmd {
        Cmd::Show => {
            // Needs no key service: the owner's signature is checked with its public key.
            let store = ctx.store()?;
            let config = Repository::read_config(ctx.rt.handle(), &store)?;
            let copy = ctx.owner_copy(&config.body.repository);
            let policy = ctx.rt.block_on(read_key_policy(
                store.as_ref(),
                &config.body.repository,
                Some(&copy),
            ))?;
            ctx.answer(&Shown { policy });
        }
        Cmd::Set { file } => {
            let policy = read_file(file)?;
            let mut repo = ctx.open_repo()?;
            check_service(
                ctx,
                &policy,
                &repo.key_service().url(),
                repo.key_service().inner().as_ref(),
            )?;
            let copy = ctx.owner_copy(&repo.id());
            repo.set_key_policy(policy.clone(), Some(&copy))?;
            ctx.say("key policy set");
            ctx.answer(&Shown {
                policy: Some(policy),
            });
        }
    }
    Ok(Outcome::OK)
}
