//! `key`: create a keyring, export a writer keyring, list KEKs and what they protect.

use std::path::PathBuf;

use super::{Ctx, Outcome};
use custody::blocking::{BlockingKeys, BlockingStore};
use custody::error::{Error, Result};
use custody::identity::WriterIdentity;
use custody::keyservice::local::read_passphrase_file;
use custody::keyservice::{AwsKms, KeyServiceUrl, KeyringRole, LocalKeyring, Pkcs11Service};
use custody::repo::kek_usage::kek_usage;
use custody::repo::writers::WriterListing;
use custody::repo::Repository;
use custody::SignerId;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// Create KEKs in the key service: a new local keyring folder, or three new KMS keys
    /// (`--key-service awskms:new`: meta, data, and the owner's HMAC key); prints the URL to
    /// use (writers get it without `owner=`).
    Create {
        /// Refuse to make keys outside this key policy (e.g. KMS keys in other regions).
        #[arg(long, value_name = "FILE")]
        key_policy: Option<PathBuf>,
    },
    /// The repository's key policy: where its KEKs may be.
    #[command(subcommand)]
    Policy(super::key_policy::Cmd),
    /// Write a keyring for a role to a new folder. For `writer` in a repository that signs
    /// its objects, also enroll a new writer and write its identity (identity.json) there; with
    /// KMS or PKCS#11 only the identity is written (give it to the writer with --identity).
    Export {
        /// `writer`: can back up (with dedup) but never read data back.
        #[arg(long, value_parser = ["writer", "owner"])]
        role: String,
        /// The new keyring folder (must not hold a keyring yet).
        #[arg(long)]
        to: PathBuf,
        /// The writer's name in `key list`, `check` and `forget` (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
        /// The only host(s) this writer may back up (repeatable): a snapshot it makes claiming
        /// another host is refused. Default: any host.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Seal the new keyring with the passphrase in this file. Without it a writer keyring
        /// is written unsealed (an unattended job then stores no secret of the owner's), and
        /// an owner keyring keeps the passphrase of the keyring it copies.
        #[arg(long, value_name = "FILE")]
        to_passphrase_file: Option<PathBuf>,
    },
    /// Change the passphrase that seals a local keyring (the current one from
    /// --passphrase-file or CUSTODY_KEYRING_PASSPHRASE, or asked for), or remove it.
    Passwd {
        /// The new passphrase, from this file.
        /// Without either, on a terminal, it is asked for.
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        /// Leave the keyring unsealed (anyone who can read the file can use its keys).
        #[arg(long, conflicts_with = "new_passphrase_file")]
        no_passphrase: bool,
    },
    /// KEKs in use, how many wrapped keys each protects, and their ages; enrolled writers.
    List,
    /// Enrolled writers (and revoked ones), as `key list` shows them; `--json` for scripts.
    Writers,
    /// Revoke an enrolled writer: what it stored so far stays valid, anything it stores later
    /// is refused (by id, id prefix, or name).
    Revoke { writer: String },
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
        Cmd::Policy(c) => super::key_policy::run(ctx, c),
        Cmd::Passwd {
            new_passphrase_file,
            no_passphrase,
        } => {
            let store = ctx.store();
            let url = match (&ctx.key_service, store) {
                (Some(u), _) => u.clone(),
                (None, Ok(s)) => {
                    let cfg = Repository::read_config(ctx.rt.handle(), &s)?;
                    ctx.key_service_url(&cfg.body.repository)
                }
                (None, Err(e)) => return Err(e),
            };
            let dir = local_dir(&url)?;
            let current = ctx.passphrase_for(&dir)?;
            let new = match (new_passphrase_file, no_passphrase) {
                (Some(f), _) => Some(read_passphrase_file(f)?),
                (None, true) => None,
                (None, false) if ctx.can_prompt => match ctx.ask_new_passphrase()? {
                    Some(p) => Some(p),
                    None => {
                        return Err(Error::invalid(
                            "no passphrase given; to leave the keyring unsealed say --no-passphrase",
                        ))
                    }
                },
                (None, false) => {
                    return Err(Error::invalid(
                        "give the new passphrase with --new-passphrase-file FILE (or run on a terminal to be asked), or --no-passphrase",
                    ))
                }
            };
            LocalKeyring::change_passphrase(&dir, current.as_ref(), new.as_ref())?;
            ctx.say(format_args!(
                "keyring {} is now {}",
                dir.display(),
                if new.is_some() {
                    "sealed with the new passphrase"
                } else {
                    "unsealed: anyone who can read the file can use its keys"
                }
            ));
            Ok(Outcome::OK)
        }
        Cmd::Create { key_policy } => {
            let url = ctx
                .key_service
                .clone()
                .ok_or_else(|| Error::invalid("key create needs --key-service local:<dir>"))?;
            let policy = key_policy
                .as_deref()
                .map(super::key_policy::read_file)
                .transpose()?;
            if let Some(p) = &policy {
                p.check_kind(&url)?;
            }
            let url = match KeyServiceUrl::parse(&url)? {
                KeyServiceUrl::Local(dir) => {
                    let pass = ctx.new_passphrase()?;
                    LocalKeyring::create(&dir, pass.as_ref())?;
                    // Not asked for again when the policy check opens it below.
                    if let Some(p) = pass {
                        let _ = ctx.prompted.set(p);
                    }
                    url
                }
                KeyServiceUrl::AwsKms(_) => {
                    // Two keys, so that a writer can be allowed to unwrap the repository
                    // secret (meta) without being able to unwrap session keys (data).
                    let kms = ctx.rt.block_on(AwsKms::open(&url, &ctx.env.aws))?;
                    if let Some(p) = &policy {
                        p.check_new_kms_region(kms.region().as_deref())?;
                    }
                    let meta = ctx
                        .rt
                        .block_on(kms.create_key("custody meta KEK (wraps repository secrets)"))?;
                    let data = ctx
                        .rt
                        .block_on(kms.create_key("custody data KEK (wraps session data keys)"))?;
                    let owner = ctx.rt.block_on(kms.create_owner_key())?;
                    format!("awskms:{data}?meta={meta}&owner={owner}")
                }
                // Printed without PINs.
                KeyServiceUrl::Pkcs11(u) => Pkcs11Service::create_keys(&u)?,
                KeyServiceUrl::Quorum(p) => {
                    let p = custody::keyservice::quorum::Quorum::create_keys(
                        &p,
                        &ctx.key_options("")?,
                        ctx.rt.handle(),
                    )?;
                    format!("quorum:{}", p.display())
                }
            };
            if let Some(p) = &policy {
                // The printed URL of a token has no PIN: check with the one given.
                let given = ctx.key_service.clone().unwrap_or_default();
                let open_with = if given.starts_with("awskms:") {
                    &url
                } else {
                    &given
                };
                let keys = custody::keyservice::open(
                    open_with,
                    &ctx.key_options(open_with)?,
                    ctx.rt.handle(),
                )?;
                super::key_policy::check_service(ctx, p, &url, keys.as_ref()).map_err(|e| {
                    Error::KeyDenied {
                        key: url.clone(),
                        operation: "key create".into(),
                        reason: format!(
                            "the keys were made, but {e}: delete them (or schedule their deletion)"
                        ),
                    }
                })?;
            }
            ctx.emit(&KeysCreated {
                key_service: url,
                created: true,
            });
            Ok(Outcome::OK)
        }
        Cmd::Export {
            role,
            to,
            name,
            hosts,
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
            let role = if role == "writer" {
                KeyringRole::Writer
            } else {
                KeyringRole::Owner
            };
            let sealing = match (to_passphrase_file, role) {
                (Some(f), _) => Some(read_passphrase_file(f)?),
                // Never the owner's passphrase on a writer's keyring.
                (None, KeyringRole::Writer) => None,
                (None, KeyringRole::Owner) => match local_dir(&url) {
                    Ok(dir) => ctx.passphrase_for(&dir)?,
                    Err(_) => ctx.passphrase.clone(),
                },
            };
            if let KeyServiceUrl::Quorum(file) = KeyServiceUrl::parse(&url)? {
                return export_quorum_writer(ctx, &file, to, role, sealing, name, hosts);
            }
            // A writer of a signed repository is enrolled first: nothing is written to `to`
            // unless the owner's key service could sign the enrollment.
            let local = local_dir(&url);
            let is_local = local.is_ok();
            let repo = match (role, &ctx.repo) {
                (KeyringRole::Writer, Some(_)) => match ctx.open_repo() {
                    Ok(r) => Some(r),
                    // A keyring for another repository (or a key service that is not this
                    // one's owner) is still exported, without an identity.
                    Err(e) if local.is_ok() => {
                        super::err_line(format_args!("custody: warning: no writer enrolled in the repository ({e}); the keyring is written without an identity"));
                        None
                    }
                    Err(e) => return Err(e),
                },
                _ => None,
            };
            if let Ok(dir) = &local {
                let k = LocalKeyring::open(dir, ctx.passphrase_for(dir)?.as_ref())?;
                k.write_to(to, role, sealing.as_ref())?;
            }
            let mut identity = None;
            if let Some(repo) = repo.filter(|r| r.is_signed()) {
                let name = name.clone().unwrap_or_else(|| {
                    to.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "writer".into())
                });
                let id = repo.enroll_writer(&name, hosts)?;
                let path = WriterIdentity::path_in(to);
                id.write(&path, sealing.as_ref())?;
                identity = Some(WriterEnrolled {
                    writer: id.key.id(),
                    name,
                    identity: path,
                });
            } else {
                // Neither a keyring nor an identity to write: say why.
                local?;
            }
            ctx.emit(&KeyringExported {
                key_service: is_local.then(|| format!("local:{}", to.display())),
                role,
                enrolled: identity,
            });
            Ok(Outcome::OK)
        }
        Cmd::Revoke { writer } => {
            let repo = ctx.open_repo()?;
            let revoked = repo.revoke_writer(writer)?;
            ctx.emit(&revoked);
            Ok(Outcome::OK)
        }
        Cmd::List => {
            let store = ctx.store()?;
            let cfg = Repository::read_config(ctx.rt.handle(), &store)?;
            let keys = ctx.open_key_service(&store, &cfg)?;
            let handle = ctx.rt.handle().clone();
            let mut unreadable = Vec::new();
            let table = kek_usage(
                &BlockingStore::new(handle.clone(), store),
                &BlockingKeys::new(handle, keys),
                &cfg,
                &mut unreadable,
            )?;
            for u in &unreadable {
                super::err_line(format_args!("{u}"));
            }
            ctx.answer(&table);
            // Writers are listed for a person here (the JSON document stays the KEK table;
            // `key writers --json` lists them): only a key holder sees the roster.
            if !ctx.json {
                if let Ok(repo) = ctx.open_repo() {
                    if repo.roster().is_some() {
                        ctx.answer(&WriterTable(repo.writers()));
                    }
                }
            }
            Ok(Outcome::OK)
        }
        Cmd::Writers => {
            let repo = ctx.open_repo()?;
            if repo.roster().is_none() {
                return Err(Error::invalid(
                    "only a key holder can list writers, in a repository that signs its objects",
                ));
            }
            ctx.answer(&WriterTable(repo.writers()));
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

/// `key export`: where the keyring went, for which role, and the writer it enrolled.
#[derive(Debug, serde::Serialize)]
struct KeyringExported {
    /// The new keyring's URL (`None` when only an identity was written: KMS, PKCS#11).
    key_service: Option<String>,
    role: KeyringRole,
    #[serde(skip_serializing_if = "Option::is_none")]
    enrolled: Option<WriterEnrolled>,
}

#[derive(Debug, serde::Serialize)]
struct WriterEnrolled {
    writer: SignerId,
    name: String,
    identity: PathBuf,
}

impl std::fmt::Display for KeyringExported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = format!("{:?}", self.role).to_lowercase();
        if let Some(url) = &self.key_service {
            writeln!(f, "wrote {role} keyring to {url}")?;
        }
        if let Some(e) = &self.enrolled {
            write!(
                f,
                "enrolled writer {:?} ({}); its identity is {}",
                e.name,
                e.writer.short(),
                e.identity.display()
            )?;
            if self.key_service.is_none() {
                write!(
                    f,
                    " (give it to the writer with --identity or CUSTODY_IDENTITY)"
                )?;
            }
        }
        Ok(())
    }
}

/// `key writers` (and the end of `key list`).
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
struct WriterTable(Vec<WriterListing>);

impl std::fmt::Display for WriterTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no enrolled writers");
        }
        writeln!(
            f,
            "{:<10} {:<20} {:<26} {:<26} hosts",
            "writer", "name", "enrolled", "revoked"
        )?;
        for w in &self.0 {
            let revoked = w.revoked.map(custody::human::local_time);
            let hosts = if w.hosts.is_empty() {
                "any".to_string()
            } else {
                w.hosts.join(",")
            };
            writeln!(
                f,
                "{:<10} {:<20} {:<26} {:<26} {hosts}",
                w.writer.short(),
                w.name,
                custody::human::local_time(w.enrolled),
                revoked.unwrap_or_else(|| "-".into()),
            )?;
        }
        Ok(())
    }
}

/// `key export --role writer` with a quorum: the holders' writer keyrings and a quorum file
/// naming them (docs/FORMAT.md §11.4), and the writer enrolled beside them (`identity.json`).
fn export_quorum_writer(
    ctx: &Ctx,
    file: &std::path::Path,
    to: &std::path::Path,
    role: KeyringRole,
    sealing: Option<secrecy::SecretString>,
    name: &Option<String>,
    hosts: &[String],
) -> Result<Outcome> {
    if role != KeyringRole::Writer {
        return Err(Error::invalid(
            "a quorum's owner keyrings stay with their holders: key export of a quorum is for --role writer",
        ));
    }
    // Enrolled first: nothing is written unless the holders could sign the enrollment.
    let repo = match &ctx.repo {
        Some(_) => Some(ctx.open_repo()?),
        None => None,
    };
    let out = custody::keyservice::quorum::Quorum::export_writer(
        file,
        to,
        ctx.passphrase.as_ref(),
        sealing.as_ref(),
    )?;
    let mut enrolled = None;
    if let Some(repo) = repo.filter(|r| r.is_signed()) {
        let name = name.clone().unwrap_or_else(|| "writer".into());
        let id = repo.enroll_writer(&name, hosts)?;
        let path = WriterIdentity::path_in(to);
        id.write(&path, sealing.as_ref())?;
        enrolled = Some(WriterEnrolled {
            writer: id.key.id(),
            name,
            identity: path,
        });
    }
    ctx.emit(&KeyringExported {
        key_service: Some(format!("quorum:{}", out.display())),
        role,
        enrolled,
    });
    Ok(Outcome::OK)
}
