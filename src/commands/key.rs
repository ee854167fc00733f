//! `key`: create a keyring, export a writer keyring, list KEKs and what they protect.

use std::path::PathBuf;

use super::{Ctx, Outcome};
use custody::blocking::{BlockingKeys, BlockingStore};
use custody::error::{Error, Result};
use custody::keyservice::local::read_passphrase_file;
use custody::keyservice::{AwsKms, KeyServiceUrl, KeyringRole, LocalKeyring, Pkcs11Service};
use custody::repo::kek_usage::kek_usage;
use custody::repo::Repository;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// Create KEKs in the key service: a new local keyring folder, or two new KMS keys
    /// (`--key-service awskms:new`); prints the URL to use.
    Create,
    /// Write a keyring for a role to a new folder.
    Export {
        /// `writer`: can back up (with dedup) but never read data back.
        #[arg(long, value_parser = ["writer", "owner"])]
        role: String,
        /// The new keyring folder (must not hold a keyring yet).
        #[arg(long)]
        to: PathBuf,
        /// Seal the new keyring with the passphrase in this file. Without it a writer keyring
        /// is written unsealed (an unattended job then stores no secret of the owner's), and
        /// an owner keyring keeps the passphrase of the keyring it copies.
        #[arg(long, value_name = "FILE")]
        to_passphrase_file: Option<PathBuf>,
    },
    /// KEKs in use, how many wrapped keys each protects, and their ages.
    List,
}

fn local_dir(url: &str) -> Result<PathBuf> {
    match KeyServiceUrl::parse(url)? {
        KeyServiceUrl::Local(d) => Ok(d),
        _ => Err(Error::invalid(
            "key export works on local keyrings; for KMS grant the writer role with keys/aws/, for PKCS#11 give writers a token without the data KEK's private half (see README)",
        )),
    }
}

pub fn run(ctx: &Ctx, cmd: &Cmd) -> Result<Outcome> {
    match cmd {
        Cmd::Create => {
            let url = ctx
                .key_service
                .clone()
                .ok_or_else(|| Error::invalid("key create needs --key-service local:<dir>"))?;
            let url = match KeyServiceUrl::parse(&url)? {
                KeyServiceUrl::Local(dir) => {
                    LocalKeyring::create(&dir, ctx.passphrase.as_ref())?;
                    url
                }
                KeyServiceUrl::AwsKms(_) => {
                    // Two keys, so that a writer can be allowed to unwrap the repository
                    // secret (meta) without being able to unwrap session keys (data).
                    let kms = ctx.rt.block_on(AwsKms::open(&url, &ctx.env.aws))?;
                    let meta = ctx
                        .rt
                        .block_on(kms.create_key("custody meta KEK (wraps repository secrets)"))?;
                    let data = ctx
                        .rt
                        .block_on(kms.create_key("custody data KEK (wraps session data keys)"))?;
                    format!("awskms:{data}?meta={meta}")
                }
                // Printed without PINs.
                KeyServiceUrl::Pkcs11(u) => Pkcs11Service::create_keys(&u)?,
            };
            ctx.emit(&KeysCreated {
                key_service: url,
                created: true,
            });
            Ok(Outcome::OK)
        }
        Cmd::Export {
            role,
            to,
            to_passphrase_file,
        } => {
            let store = ctx.store()?;
            let url = match (&ctx.key_service, &ctx.repo) {
                (Some(u), _) => u.clone(),
                (None, Some(_)) => {
                    let cfg = Repository::read_config(ctx.rt.handle(), &store)?;
                    ctx.key_service_url(&cfg.body.repository)
                }
                (None, None) => {
                    return Err(Error::invalid("key export needs --key-service or --repo"))
                }
            };
            let dir = local_dir(&url)?;
            let k = LocalKeyring::open(&dir, ctx.passphrase.as_ref())?;
            let role = if role == "writer" {
                KeyringRole::Writer
            } else {
                KeyringRole::Owner
            };
            let sealing = match (to_passphrase_file, role) {
                (Some(f), _) => Some(read_passphrase_file(f)?),
                // Never the owner's passphrase on a writer's keyring.
                (None, KeyringRole::Writer) => None,
                (None, KeyringRole::Owner) => ctx.passphrase.clone(),
            };
            k.write_to(to, role, sealing.as_ref())?;
            ctx.emit(&KeyringExported {
                key_service: format!("local:{}", to.display()),
                role,
            });
            Ok(Outcome::OK)
        }
        Cmd::List => {
            let store = ctx.store()?;
            let cfg = Repository::read_config(ctx.rt.handle(), &store)?;
            let keys = ctx.open_key_service(&cfg.body.repository)?;
            let handle = ctx.rt.handle().clone();
            let mut unreadable = Vec::new();
            let table = kek_usage(
                &BlockingStore::new(handle.clone(), store),
                &BlockingKeys::new(handle, keys),
                &cfg,
                &mut unreadable,
            )?;
            for u in &unreadable {
                eprintln!("{u}");
            }
            ctx.answer(&table);
            Ok(Outcome::OK)
        }
    }
}

/// `key create`: the new key service's URL (printed without PINs).
#[derive(Debug, serde::Serialize)]
struct KeysCreated {
    key_service: String,
    created: bool,
}

impl std::fmt::Display for KeysCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "created key service {}", self.key_service)
    }
}

/// `key export`: where the keyring went, and for which role.
#[derive(Debug, serde::Serialize)]
struct KeyringExported {
    key_service: String,
    role: KeyringRole,
}

impl std::fmt::Display for KeyringExported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = format!("{:?}", self.role).to_lowercase();
        write!(f, "wrote {role} keyring to {}", self.key_service)
    }
}
