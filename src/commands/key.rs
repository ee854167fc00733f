//! `key`: create a keyring, export a writer keyring, list KEKs and what they protect.

use std::path::PathBuf;

use serde_json::json;

use super::{Ctx, Outcome};
use custody::blocking::{BlockingKeys, BlockingStore};
use custody::error::{Error, Result};
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
            if ctx.json {
                ctx.print_json(&json!({"key_service": url, "created": true}));
            } else {
                ctx.say(format!("created key service {url}"));
            }
            Ok(Outcome::OK)
        }
        Cmd::Export { role, to } => {
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
            k.write_to(to, role, ctx.passphrase.as_ref())?;
            if ctx.json {
                ctx.print_json(
                    &json!({"key_service": format!("local:{}", to.display()), "role": role}),
                );
            } else {
                ctx.say(format!("wrote {role:?} keyring to local:{}", to.display()).to_lowercase());
            }
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
