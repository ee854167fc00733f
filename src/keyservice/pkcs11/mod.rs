//! `pkcs11:token=LABEL;object=LABEL?module-path=PATH&pin-value=PIN` (or `pin-source=FILE`):
//! KEKs inside a PKCS#11 token (an HSM; SoftHSM2 in the tests), through `cryptoki`.
//!
//! - meta KEK `<object>-meta`: an AES-256 key, sensitive and non-extractable; wraps the
//!   repository secret with AES-GCM inside the token (AAD = the encryption context).
//! - data KEK `<object>-data`: an RSA-3072 key pair; session keys are wrapped with RSA-OAEP
//!   under the public half as `DEK || SHA-256(context)`, and unwrapped inside the
//!   token by the private half, which is sensitive and never leaves it. (OAEP uses SHA-1,
//!   the only hash SoftHSM2 2.6 supports for it; the context binding is SHA-256.)
//!
//! Write-only backup jobs: keep the private half in a second token that only key holders can
//! log in to (`data-token=LABEL&data-pin-value=...` or `data-pin-source=FILE` on the key
//! holders' URL). The writer's token holds the meta key and a copy of the public half only,
//! so whoever holds the writer's PIN can add data but never unwrap a session key.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use ring::digest;
use secrecy::SecretString;

use super::{audit, audit_decrypt, KekInfo, KekPurpose, KeyService};
use crate::crypto::{random, Key32};
use crate::error::{Error, Result};
use crate::format::wrapped::{context_bytes, Context, Purpose, WrappedKey};

const ALG_META: &str = "pkcs11-aes256gcm-v1";
/// RSA-OAEP with SHA-1 and MGF1-SHA-1: the only OAEP parameters SoftHSM2 2.6 accepts. OAEP's
/// security does not rest on collision resistance, so SHA-1 here is sound.
const ALG_DATA: &str = "pkcs11-rsa3072-oaep-sha1-v1";

mod objects;
mod url;

use objects::{find, generate, hardened, public_key_sha256, refused_template};

pub use url::Pkcs11Url;

struct Inner {
    url: Pkcs11Url,
    /// The writer's (or only) token: meta key, data public key.
    main: Mutex<Session>,
    /// The token holding the data private key, when it is not the main one.
    data: Option<Mutex<Session>>,
    /// Fingerprints of the data public key the repository's key policy pins (FORMAT.md §20):
    /// a session key is wrapped only with one of them, like `data-key-sha256` in the URL.
    pins: std::sync::RwLock<Vec<String>>,
    // Keep the library loaded as long as the sessions.
    _ctx: Pkcs11,
}

pub struct Pkcs11Service(Arc<Inner>);

impl std::fmt::Debug for Pkcs11Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Service")
            .field("url", &self.0.url)
            .finish()
    }
}

fn map_ck(key: &str, op: &str, e: CkError) -> Error {
    let (key, operation) = (key.to_string(), op.to_string());
    match &e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect | RvError::PinLenRange | RvError::PinLocked | RvError::PinExpired => {
                Error::KeyDenied { key, operation, reason: format!("wrong or locked PIN ({rv})") }
            }
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::DataInvalid => {
                Error::integrity(
                    format!("key wrapped by {key}"),
                    format!("the token refused the ciphertext ({rv}): altered, or bound to another repository, purpose or session"),
                )
            }
            RvError::DeviceError | RvError::DeviceRemoved | RvError::TokenNotPresent
            | RvError::DeviceMemory | RvError::GeneralError => {
                Error::KeyUnavailable { key, operation, reason: rv.to_string() }
            }
            _ => Error::KeyDenied { key, operation, reason: rv.to_string() },
        },
        _ => Error::KeyUnavailable { key, operation, reason: e.to_string() },
    }
}

/// Opens a read-write session on the token labelled `label` and logs in with `pin`, the one
/// place a PIN is used.
fn open_session(
    ctx: &Pkcs11,
    url: &Pkcs11Url,
    label: &str,
    pin: Option<&SecretString>,
) -> Result<Session> {
    let shown = format!("pkcs11:token={label}");
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| map_ck(&shown, "list tokens", e))?;
    let slot = slots
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label().trim() == label)
                .unwrap_or(false)
        })
        .ok_or_else(|| Error::KeyUnavailable {
            key: shown.clone(),
            operation: "open token".into(),
            reason: format!("no token labelled {label:?} in {}", url.module),
        })?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| map_ck(&shown, "open session", e))?;
    let pin = pin.ok_or_else(|| Error::KeyDenied {
        key: shown.clone(),
        operation: "login".into(),
        reason: "no PIN given: add pin-value=... or pin-source=FILE to the URL".into(),
    })?;
    // cryptoki's AuthPin is secrecy's SecretString: the PIN is exposed inside the login only.
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(map_ck(&shown, "login", e)),
    }
}

fn oaep() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ))
}

fn ctx_digest(ctx: &Context) -> Vec<u8> {
    digest::digest(&digest::SHA256, &context_bytes(ctx))
        .as_ref()
        .to_vec()
}

impl Inner {
    fn data_session(&self) -> &Mutex<Session> {
        self.data.as_ref().unwrap_or(&self.main)
    }

    fn wrap(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        let u = &self.url;
        match purpose {
            Purpose::RepositorySecret => {
                let kref = u.meta_ref();
                let s = self.main.lock().expect("lock");
                let h = find(&s, ObjectClass::SECRET_KEY, &format!("{}-meta", u.object))?
                    .ok_or_else(|| missing(&kref))?;
                let mut iv = [0u8; 12];
                random::fill(&mut iv)?;
                let aad = context_bytes(ctx);
                let params = GcmParams::new(&mut iv, &aad, 128.into())
                    .map_err(|e| map_ck(&kref, "wrap", e))?;
                let ct = s
                    .encrypt(&Mechanism::AesGcm(params), h, key.expose())
                    .map_err(|e| map_ck(&kref, "wrap", e))?;
                let mut out = iv.to_vec();
                out.extend_from_slice(&ct);
                Ok(WrappedKey {
                    kek: kref,
                    algorithm: ALG_META.into(),
                    ciphertext: out,
                })
            }
            Purpose::SessionKey => {
                let kref = u.data_ref();
                // Key holders (and prune's repack) wrap with the public half on the token that
                // holds the private half, not with the copy on the writer's token, which
                // whoever has the writer PIN could replace.
                let s = self.data_session().lock().expect("lock");
                let h = find(&s, ObjectClass::PUBLIC_KEY, &format!("{}-data", u.object))?
                    .ok_or_else(|| missing(&kref))?;
                objects::check_pins(&s, h, &self.pins.read().expect("lock"), &kref)?;
                if let Some(pin) = &u.data_key_sha256 {
                    let found = public_key_sha256(&s, h)
                        .map_err(|e| map_ck(&kref, "read public key", e))?;
                    if &found != pin {
                        return Err(Error::KeyDenied {
                            key: kref,
                            operation: "wrap".into(),
                            reason: format!(
                                "the data key's public half on the token (sha256 {found}) is not \
                                 the one key create made (data-key-sha256={pin}): someone \
                                 replaced it; nothing was wrapped"
                            ),
                        });
                    }
                }
                let mut pt = zeroize::Zeroizing::new(key.expose().to_vec());
                pt.extend_from_slice(&ctx_digest(ctx));
                let ct = s
                    .encrypt(&oaep(), h, &pt)
                    .map_err(|e| map_ck(&kref, "wrap", e))?;
                Ok(WrappedKey {
                    kek: kref,
                    algorithm: ALG_DATA.into(),
                    ciphertext: ct,
                })
            }
        }
    }

    fn unwrap(&self, w: &WrappedKey, ctx: &Context) -> Result<Key32> {
        let u = &self.url;
        let integrity = || {
            Error::integrity(
                format!("key wrapped by {}", w.kek),
                "does not open: altered, or bound to another repository, purpose or session",
            )
        };
        if w.kek == u.meta_ref() && w.algorithm == ALG_META {
            if w.ciphertext.len() != 12 + 32 + 16 {
                return Err(integrity());
            }
            let s = self.main.lock().expect("lock");
            let h = find(&s, ObjectClass::SECRET_KEY, &format!("{}-meta", u.object))?
                .ok_or_else(|| missing(&w.kek))?;
            let mut iv: [u8; 12] = w.ciphertext[..12].try_into().expect("length checked");
            let aad = context_bytes(ctx);
            let params = GcmParams::new(&mut iv, &aad, 128.into())
                .map_err(|e| map_ck(&w.kek, "unwrap", e))?;
            let pt = zeroize::Zeroizing::new(
                s.decrypt(&Mechanism::AesGcm(params), h, &w.ciphertext[12..])
                    .map_err(|e| match map_ck(&w.kek, "unwrap", e) {
                        // A general error while the token still answers: the ciphertext failed.
                        Error::KeyUnavailable { .. }
                            if find(&s, ObjectClass::SECRET_KEY, &format!("{}-meta", u.object))
                                .is_ok() =>
                        {
                            integrity()
                        }
                        e => e,
                    })?,
            );
            Key32::from_slice(&pt).ok_or_else(integrity)
        } else if w.kek == u.data_ref() && w.algorithm == ALG_DATA {
            let s = self.data_session().lock().expect("lock");
            let h = find(&s, ObjectClass::PRIVATE_KEY, &format!("{}-data", u.object))?
                .ok_or_else(|| Error::KeyDenied {
                    key: w.kek.clone(),
                    operation: "decrypt".into(),
                    reason: format!(
                        "token {} holds no private half of the data KEK: a writer's token can wrap session keys but never unwrap them",
                        u.data_token.as_deref().unwrap_or(&u.token)
                    ),
                })?;
            let pt =
                zeroize::Zeroizing::new(s.decrypt(&oaep(), h, &w.ciphertext).map_err(|e| {
                    match map_ck(&w.kek, "unwrap", e) {
                        // SoftHSM reports a failed OAEP padding check as a general error. When
                        // the token still answers, the ciphertext is what failed.
                        Error::KeyUnavailable { .. }
                            if find(
                                &s,
                                ObjectClass::PRIVATE_KEY,
                                &format!("{}-data", u.object),
                            )
                            .is_ok() =>
                        {
                            integrity()
                        }
                        e => e,
                    }
                })?);
            if pt.len() != 64 || pt[32..] != ctx_digest(ctx)[..] {
                return Err(integrity());
            }
            Key32::from_slice(&pt[..32]).ok_or_else(integrity)
        } else {
            Err(Error::KeyDenied {
                key: w.kek.clone(),
                operation: "decrypt".into(),
                reason: format!("not a KEK of {}", u.public()),
            })
        }
    }
}

/// Labels the owner anchor's HMAC input (docs/FORMAT.md §17.1).
const OWNER_ANCHOR_LABEL: &[u8] = b"custody/v2/owner-anchor";

/// The `<O>-owner` HMAC key in the key holders' token, made there (sensitive, never
/// extractable) when missing: by `key create`, or on first use by a token made before.
fn ensure_owner_key(s: &Session, object: &str, owner_ref: &str) -> Result<ObjectHandle> {
    let label = format!("{object}-owner");
    if let Some(h) = find(s, ObjectClass::SECRET_KEY, &label)? {
        return Ok(h);
    }
    let template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::ValueLen(32.into()),
        Attribute::Label(label.into_bytes()),
    ];
    generate(&template, |t| {
        s.generate_key(&Mechanism::GenericSecretKeyGen, t)
    })
    .map_err(|e| map_ck(owner_ref, "generate", e))
}

impl Inner {
    /// `HMAC-SHA256(<O>-owner, label || R)` inside the token that holds the data KEK's private
    /// half: only key holders log in there. The HMAC key is made there (sensitive,
    /// non-extractable) the first time a key holder needs it.
    fn owner_anchor(&self, repo: &crate::id::Id) -> Result<(Key32, String)> {
        let u = &self.url;
        let owner_ref = format!("{}-owner", u.data_ref());
        let s = self.data_session().lock().expect("lock");
        let holds_private =
            find(&s, ObjectClass::PRIVATE_KEY, &format!("{}-data", u.object))?.is_some();
        if !holds_private {
            return Err(Error::KeyDenied {
                key: u.data_ref(),
                operation: "owner-anchor".into(),
                reason:
                    "a writer's token (no private half of the data KEK) cannot sign as the owner"
                        .into(),
            });
        }
        let h = ensure_owner_key(&s, &u.object, &owner_ref)?;
        let msg = [OWNER_ANCHOR_LABEL, repo.as_bytes()].concat();
        let mac = zeroize::Zeroizing::new(
            s.sign(&Mechanism::Sha256Hmac, h, &msg)
                .map_err(|e| map_ck(&owner_ref, "sign", e))?,
        );
        let k = Key32::from_slice(&mac).ok_or_else(|| Error::KeyUnavailable {
            key: owner_ref.clone(),
            operation: "sign".into(),
            reason: "HMAC-SHA256 did not return 32 bytes".into(),
        })?;
        Ok((k, owner_ref))
    }
}

fn missing(kref: &str) -> Error {
    Error::KeyUnavailable {
        key: kref.to_string(),
        operation: "find key".into(),
        reason: "no such key in the token (run `custody key create` with this URL)".into(),
    }
}

fn load(module: &str) -> Result<Pkcs11> {
    let ctx = Pkcs11::new(module).map_err(|e| Error::KeyUnavailable {
        key: format!("pkcs11 module {module}"),
        operation: "load".into(),
        reason: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(map_ck(module, "initialize", e)),
    }
}

impl Pkcs11Service {
    pub fn open(url: &str) -> Result<Pkcs11Service> {
        let mut u = Pkcs11Url::parse(url)?;
        // The PINs serve only to log in: the open service does not keep them.
        let (pin, data_pin) = (u.pin.take(), u.data_pin.take());
        let ctx = load(&u.module)?;
        let main = open_session(&ctx, &u, &u.token, pin.as_ref())?;
        let data = match &u.data_token {
            Some(t) if *t != u.token => {
                Some(Mutex::new(open_session(&ctx, &u, t, data_pin.as_ref())?))
            }
            _ => None,
        };
        Ok(Pkcs11Service(Arc::new(Inner {
            url: u,
            main: Mutex::new(main),
            data,
            pins: Default::default(),
            _ctx: ctx,
        })))
    }

    /// Pins the data public key to these fingerprints (the repository's key policy).
    pub fn pin_data_keys(&self, fingerprints: &[String]) {
        *self.0.pins.write().expect("lock") = fingerprints.to_vec();
    }

    /// Generates the KEKs inside the token(s); refuses when they already exist.
    pub fn create_keys(url: &str) -> Result<String> {
        let svc = Pkcs11Service::open(url)?;
        let i = &svc.0;
        let u = &i.url;
        let meta_label = format!("{}-meta", u.object).into_bytes();
        let data_label = format!("{}-data", u.object).into_bytes();
        {
            let s = i.main.lock().expect("lock");
            if find(&s, ObjectClass::SECRET_KEY, &format!("{}-meta", u.object))?.is_some() {
                return Err(Error::AlreadyExists(format!("key {}", u.meta_ref())));
            }
            let template = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::ValueLen(32.into()),
                Attribute::Label(meta_label),
            ];
            generate(&template, |t| s.generate_key(&Mechanism::AesKeyGen, t))
                .map_err(|e| map_ck(&u.meta_ref(), "generate", e))?;
        }
        let (public_mod, public_exp) = {
            let s = i.data_session().lock().expect("lock");
            let public_template = [
                Attribute::Token(true),
                Attribute::Encrypt(true),
                Attribute::Verify(false),
                Attribute::Wrap(false),
                Attribute::ModulusBits(3072.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::Label(data_label.clone()),
            ];
            let private_template = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Decrypt(true),
                Attribute::Sign(false),
                Attribute::Unwrap(false),
                Attribute::Label(data_label.clone()),
            ];
            let (public, _private) = generate(&public_template, |pt| {
                s.generate_key_pair(
                    &Mechanism::RsaPkcsKeyPairGen,
                    pt,
                    &hardened(&private_template),
                )
                .or_else(|e| {
                    if refused_template(&e) {
                        s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, pt, &private_template)
                    } else {
                        Err(e)
                    }
                })
            })
            .map_err(|e| map_ck(&u.data_ref(), "generate", e))?;
            // The owner's HMAC key goes beside the private half, made now rather than on
            // first use (two first uses at once could make two).
            ensure_owner_key(&s, &u.object, &format!("{}-owner", u.data_ref()))?;
            let attrs = s
                .get_attributes(
                    public,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(|e| map_ck(&u.data_ref(), "read public key", e))?;
            let mut m = Vec::new();
            let mut x = Vec::new();
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => m = v,
                    Attribute::PublicExponent(v) => x = v,
                    _ => {}
                }
            }
            (m, x)
        };
        let fingerprint = hex::encode(digest::digest(
            &digest::SHA256,
            &[public_mod.clone(), public_exp.clone()].concat(),
        ));
        if i.data.is_some() {
            // The writer's token gets the public half only.
            let s = i.main.lock().expect("lock");
            let template = [
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(true),
                Attribute::Encrypt(true),
                Attribute::Verify(false),
                Attribute::Wrap(false),
                Attribute::Modulus(public_mod),
                Attribute::PublicExponent(public_exp),
                Attribute::Label(data_label),
            ];
            generate(&template, |t| s.create_object(t))
                .map_err(|e| map_ck(&u.data_ref(), "copy public key", e))?;
        }
        // The URL to give writers and key holders pins the public half just made.
        let mut pinned = u.clone();
        pinned.data_key_sha256 = Some(fingerprint);
        Ok(pinned.public())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("pkcs11 task failed: {e}")))?
}

#[async_trait]
impl KeyService for Pkcs11Service {
    fn url(&self) -> String {
        self.0.url.public()
    }

    async fn generate_data_key(
        &self,
        purpose: Purpose,
        ctx: &Context,
    ) -> Result<(Key32, WrappedKey)> {
        let key = Key32::generate()?;
        let (i, c, k) = (self.0.clone(), ctx.clone(), key.clone());
        let w = blocking(move || i.wrap(purpose, &k, &c)).await?;
        audit("generate-data-key", &w.kek, ctx);
        Ok((key, w))
    }

    async fn decrypt(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Key32> {
        let (i, c, w) = (self.0.clone(), ctx.clone(), wrapped.clone());
        let r = blocking(move || i.unwrap(&w, &c)).await;
        audit_decrypt(r, &wrapped.kek, ctx)
    }

    async fn encrypt(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        let (i, c, k) = (self.0.clone(), ctx.clone(), key.clone());
        let w = blocking(move || i.wrap(purpose, &k, &c)).await?;
        audit("encrypt", &w.kek, ctx);
        Ok(w)
    }

    async fn owner_anchor(&self, repo: &crate::id::Id) -> Result<(Key32, String)> {
        let (i, r) = (self.0.clone(), *repo);
        blocking(move || i.owner_anchor(&r)).await
    }

    async fn describe(&self) -> Result<Vec<KekInfo>> {
        let i = self.0.clone();
        blocking(move || {
            let u = &i.url;
            let (can, fingerprint) = {
                let s = i.data_session().lock().expect("lock");
                let label = format!("{}-data", u.object);
                let public = find(&s, ObjectClass::PUBLIC_KEY, &label)?;
                (
                    find(&s, ObjectClass::PRIVATE_KEY, &label)?.is_some(),
                    public.and_then(|h| public_key_sha256(&s, h).ok()),
                )
            };
            // The serial of the token a session is on (key policies name tokens by it).
            let serial = |s: &Mutex<Session>| {
                let s = s.lock().expect("lock");
                s.get_session_info()
                    .ok()
                    .and_then(|info| i._ctx.get_token_info(info.slot_id()).ok())
                    .map(|t| t.serial_number().trim().to_string())
            };
            Ok(vec![
                KekInfo {
                    reference: u.meta_ref(),
                    purpose: KekPurpose::Meta,
                    algorithm: ALG_META.into(),
                    created: None,
                    can_decrypt: true,
                    token_serial: serial(&i.main),
                    public_key_sha256: None,
                },
                KekInfo {
                    reference: u.data_ref(),
                    purpose: KekPurpose::Data,
                    algorithm: ALG_DATA.into(),
                    created: None,
                    can_decrypt: can,
                    token_serial: serial(i.data_session()),
                    public_key_sha256: fingerprint,
                },
            ])
        })
        .await
    }
}
