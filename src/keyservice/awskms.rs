//! `awskms:<key>[?meta=<key>]`: AWS KMS (or any server speaking its API, such as moto) through
//! aws-sdk-kms. KEKs never leave KMS: data keys come from GenerateDataKey, unwrap is Decrypt,
//! rewrap is ReEncrypt (the plaintext key never reaches the caller), each with the encryption
//! context that binds repository, purpose and key id.
//!
//! Session keys are wrapped by the data key, the repository secret by the meta key (the data
//! key when no `meta=` is given). Write-only backup jobs need two keys: IAM lets the writer
//! GenerateDataKey on the data key and Decrypt only on the meta key (templates in keys/aws/).
//! Key holders also name an HMAC key (`owner=`): GenerateMac on it makes the owner anchor
//! (docs/FORMAT.md §17.1), and writers are given no permission on it.

use async_trait::async_trait;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_kms::Client;

use super::{audit, KekInfo, KekPurpose, KeyService};
use crate::crypto::Key32;
use crate::error::{Error, Result};
use crate::format::wrapped::{Context, Purpose, WrappedKey};

const ALGORITHM: &str = "aws-kms-symmetric-default";
const PREFIX: &str = "awskms:";

/// A parsed `awskms:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsUrl {
    pub data_key: String,
    pub meta_key: String,
    /// An HMAC_256 key only key holders may use (GenerateMac): the owner anchor.
    pub owner_key: Option<String>,
}

impl KmsUrl {
    pub fn parse(url: &str) -> Result<KmsUrl> {
        let rest = url
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::invalid(format!("{url:?} is not an awskms: URL")))?;
        let (data, query) = rest.split_once('?').unwrap_or((rest, ""));
        if data.is_empty() {
            return Err(Error::invalid(
                "awskms: needs a key id, ARN or alias, e.g. awskms:alias/custody-data?meta=alias/custody-meta",
            ));
        }
        let (mut meta, mut owner) = (None, None);
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("meta", v)) if !v.is_empty() => meta = Some(v.to_string()),
                Some(("owner", v)) if !v.is_empty() => owner = Some(v.to_string()),
                _ => {
                    return Err(Error::invalid(format!(
                        "awskms: unknown option {kv:?} (known: meta=<key>, owner=<hmac key>)"
                    )))
                }
            }
        }
        Ok(KmsUrl {
            data_key: data.to_string(),
            meta_key: meta.unwrap_or_else(|| data.to_string()),
            owner_key: owner,
        })
    }
}

pub struct AwsKms {
    client: Client,
    url: KmsUrl,
    /// ARNs of the configured keys, resolved once: a record naming any other key is refused,
    /// so the bucket's custodian cannot substitute a key it controls.
    arns: tokio::sync::OnceCell<Vec<String>>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms").field("url", &self.url).finish()
    }
}

/// Maps an SDK failure to a semantic error naming the key and the operation.
fn map_err<E>(key: &str, op: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let key = key.to_string();
    let operation = op.to_string();
    match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("").to_string();
            let reason = format!("{code}: {}", se.err().message().unwrap_or(""));
            match code.as_str() {
                "InvalidCiphertextException" | "IncorrectKeyException" => Error::integrity(
                    format!("key wrapped by {key}"),
                    format!("KMS refused the ciphertext ({reason}): altered, or bound to another repository, purpose or session"),
                ),
                "ThrottlingException" | "LimitExceededException" | "KMSInternalException"
                | "DependencyTimeoutException" | "KeyUnavailableException" | "InternalFailure"
                | "ServiceUnavailable" => Error::KeyUnavailable { key, operation, reason },
                // A code this build does not know: the status tells a refusal from a failure
                // worth retrying (an endpoint in front of KMS may answer 502 or 429 with a
                // code of its own).
                _ if matches!(se.raw().status().as_u16(), 429 | 500..=599) => {
                    Error::KeyUnavailable { key, operation, reason }
                }
                _ => Error::KeyDenied { key, operation, reason },
            }
        }
        _ => Error::KeyUnavailable {
            key,
            operation,
            reason: crate::error::error_chain(&e),
        },
    }
}

fn key32(key: &str, op: &str, b: Option<&Blob>) -> Result<Key32> {
    b.and_then(|b| Key32::from_slice(b.as_ref()))
        .ok_or_else(|| Error::KeyUnavailable {
            key: key.to_string(),
            operation: op.to_string(),
            reason: "KMS returned no 32-byte plaintext key".into(),
        })
}

impl AwsKms {
    pub async fn open(url: &str, aws: &crate::settings::AwsSettings) -> Result<AwsKms> {
        let url = KmsUrl::parse(url)?;
        let conf = crate::aws::load(aws).await;
        Ok(AwsKms {
            client: Client::new(&conf),
            url,
            arns: tokio::sync::OnceCell::new(),
        })
    }

    fn kek(&self, purpose: Purpose) -> &str {
        match purpose {
            Purpose::RepositorySecret => &self.url.meta_key,
            Purpose::SessionKey => &self.url.data_key,
        }
    }

    /// Creates a symmetric KMS key (used by `key create`); returns its ARN.
    /// The region the client talks to (where `key create` makes keys).
    pub fn region(&self) -> Option<String> {
        self.client.config().region().map(|r| r.to_string())
    }

    pub async fn create_key(&self, description: &str) -> Result<String> {
        self.create(description, false).await
    }

    /// Creates the HMAC_256 key whose GenerateMac makes the owner anchor (`key create`).
    pub async fn create_owner_key(&self) -> Result<String> {
        self.create(
            "custody owner key (HMAC; key holders only, never writers)",
            true,
        )
        .await
    }

    async fn create(&self, description: &str, hmac: bool) -> Result<String> {
        let mut req = self.client.create_key().description(description);
        if hmac {
            req = req
                .key_spec(aws_sdk_kms::types::KeySpec::Hmac256)
                .key_usage(aws_sdk_kms::types::KeyUsageType::GenerateVerifyMac);
        }
        let out = req
            .send()
            .await
            .map_err(|e| map_err("(new key)", "CreateKey", e))?;
        out.key_metadata()
            .map(|m| m.arn().unwrap_or(m.key_id()).to_string())
            .ok_or_else(|| Error::invalid("CreateKey returned no key metadata"))
    }
}

impl AwsKms {
    async fn configured_arns(&self) -> Result<&Vec<String>> {
        self.arns
            .get_or_try_init(|| async {
                let mut out = Vec::new();
                for key in [&self.url.data_key, &self.url.meta_key] {
                    let d = self
                        .client
                        .describe_key()
                        .key_id(key)
                        .send()
                        .await
                        .map_err(|e| map_err(key, "DescribeKey", e))?;
                    if let Some(arn) = d.key_metadata().and_then(|m| m.arn()) {
                        out.push(arn.to_string());
                    }
                    out.push(key.to_string());
                }
                Ok(out)
            })
            .await
    }

    /// Refuses a wrapped key whose record names a KMS key this service was not given: a key
    /// problem (exit 4), typically a job still configured with the key a `rotate rewrap`
    /// moved away from. The message names the key the record uses.
    async fn check_owned(&self, kek: &str, op: &str) -> Result<()> {
        // URLs with ARNs (as `key create` prints) match without a call; aliases and bare ids
        // are resolved once with DescribeKey.
        if kek == self.url.data_key || kek == self.url.meta_key {
            return Ok(());
        }
        if self.configured_arns().await?.iter().any(|a| a == kek) {
            return Ok(());
        }
        Err(Error::KeyDenied {
            key: kek_ref(kek),
            operation: op.into(),
            reason: format!(
                "the repository's record is wrapped by this KMS key, which is not one of the \
                 configured {} (after a rotate rewrap, point CUSTODY_KEY_SERVICE at the key \
                 the repository uses now)",
                self.url()
            ),
        })
    }
}

/// The record of a key KMS just wrapped; an answer without ciphertext is an error, never an
/// empty record that would replace a good one.
fn wrapped_key(
    kek: &str,
    key_id: Option<&str>,
    blob: Option<&Blob>,
    op: &str,
) -> Result<WrappedKey> {
    let ciphertext = blob
        .map(|b| b.as_ref().to_vec())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| Error::KeyUnavailable {
            key: kek_ref(kek),
            operation: op.into(),
            reason: "KMS returned no ciphertext".into(),
        })?;
    Ok(WrappedKey {
        kek: kek_ref(key_id.unwrap_or(kek)),
        algorithm: ALGORITHM.into(),
        ciphertext,
    })
}

fn kek_ref(arn_or_id: &str) -> String {
    format!("{PREFIX}{arn_or_id}")
}

#[async_trait]
impl KeyService for AwsKms {
    fn url(&self) -> String {
        let mut u = format!("{PREFIX}{}", self.url.data_key);
        if self.url.meta_key != self.url.data_key {
            u += &format!("?meta={}", self.url.meta_key);
        }
        if let Some(o) = &self.url.owner_key {
            u += if u.contains('?') { "&" } else { "?" };
            u += &format!("owner={o}");
        }
        u
    }

    /// `GenerateMac(HMAC_SHA_256, "custody/v2/owner-anchor" || R)` with the `owner=` key.
    async fn owner_anchor(&self, repo: &crate::id::Id) -> Result<(Key32, String)> {
        let key = self
            .url
            .owner_key
            .as_deref()
            .ok_or_else(|| Error::KeyDenied {
                key: self.url(),
                operation: "GenerateMac".into(),
                reason: "this awskms: URL names no owner= key (an HMAC_256 KMS key only key \
                     holders may use; `custody key create --key-service awskms:new` makes one)"
                    .into(),
            })?;
        let msg = [&b"custody/v2/owner-anchor"[..], repo.as_bytes()].concat();
        let out = self
            .client
            .generate_mac()
            .key_id(key)
            .mac_algorithm(aws_sdk_kms::types::MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(msg))
            .send()
            .await
            .map_err(|e| map_err(key, "GenerateMac", e))?;
        let k = key32(key, "GenerateMac", out.mac())?;
        Ok((k, kek_ref(out.key_id().unwrap_or(key))))
    }

    async fn generate_data_key(
        &self,
        purpose: Purpose,
        ctx: &Context,
    ) -> Result<(Key32, WrappedKey)> {
        let kek = self.kek(purpose);
        let out = self
            .client
            .generate_data_key()
            .key_id(kek)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(ctx.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| map_err(kek, "GenerateDataKey", e))?;
        let key = key32(kek, "GenerateDataKey", out.plaintext())?;
        let w = wrapped_key(kek, out.key_id(), out.ciphertext_blob(), "GenerateDataKey")?;
        audit("GenerateDataKey", &w.kek, ctx);
        Ok((key, w))
    }

    async fn decrypt(&self, wrapped: &WrappedKey, ctx: &Context) -> Result<Key32> {
        let kek = wrapped
            .kek
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::KeyDenied {
                key: wrapped.kek.clone(),
                operation: "Decrypt".into(),
                reason: format!(
                    "this key was wrapped by another key service, not {}",
                    self.url()
                ),
            })?;
        if wrapped.algorithm != ALGORITHM {
            return Err(Error::integrity(
                format!("key wrapped by {}", wrapped.kek),
                format!("unknown algorithm {:?}", wrapped.algorithm),
            ));
        }
        self.check_owned(kek, "Decrypt").await?;
        let out = self
            .client
            .decrypt()
            .key_id(kek)
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .set_encryption_context(Some(ctx.clone().into_iter().collect()))
            .send()
            .await;
        audit(
            if out.is_ok() {
                "Decrypt"
            } else {
                "Decrypt-refused"
            },
            &wrapped.kek,
            ctx,
        );
        let out = out.map_err(|e| map_err(kek, "Decrypt", e))?;
        key32(kek, "Decrypt", out.plaintext())
    }

    async fn encrypt(&self, purpose: Purpose, key: &Key32, ctx: &Context) -> Result<WrappedKey> {
        let kek = self.kek(purpose);
        let out = self
            .client
            .encrypt()
            .key_id(kek)
            .plaintext(Blob::new(key.expose().to_vec()))
            .set_encryption_context(Some(ctx.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| map_err(kek, "Encrypt", e))?;
        let w = wrapped_key(kek, out.key_id(), out.ciphertext_blob(), "Encrypt")?;
        audit("Encrypt", &w.kek, ctx);
        Ok(w)
    }

    /// Within KMS whenever the destination is `awskms:` too: ReEncrypt through the
    /// destination's client, with the source key the record names.
    async fn require_own(&self, wrapped: &WrappedKey, operation: &str) -> Result<()> {
        let kek = wrapped
            .kek
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::KeyDenied {
                key: wrapped.kek.clone(),
                operation: operation.into(),
                reason: format!(
                    "this key was wrapped by another key service, not {}",
                    self.url()
                ),
            })?;
        self.check_owned(kek, operation).await
    }

    fn rewrap_within(&self, to: &dyn KeyService) -> bool {
        to.as_any().is::<AwsKms>()
    }

    async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        purpose: Purpose,
        ctx: &Context,
    ) -> Result<WrappedKey> {
        let to = self.kek(purpose);
        let source = wrapped
            .kek
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::KeyDenied {
                key: wrapped.kek.clone(),
                operation: "ReEncrypt".into(),
                reason: "the key was not wrapped by KMS".into(),
            })?;
        let c: std::collections::HashMap<String, String> = ctx.clone().into_iter().collect();
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .source_key_id(source)
            .set_source_encryption_context(Some(c.clone()))
            .destination_key_id(to)
            .set_destination_encryption_context(Some(c))
            .send()
            .await
            .map_err(|e| map_err(to, "ReEncrypt", e))?;
        let w = wrapped_key(to, out.key_id(), out.ciphertext_blob(), "ReEncrypt")?;
        audit("ReEncrypt", &w.kek, ctx);
        Ok(w)
    }

    async fn describe(&self) -> Result<Vec<KekInfo>> {
        let mut out = Vec::new();
        let keys: Vec<(KekPurpose, &str)> = if self.url.meta_key == self.url.data_key {
            vec![(KekPurpose::MetaAndData, &self.url.data_key)]
        } else {
            vec![
                (KekPurpose::Meta, &self.url.meta_key),
                (KekPurpose::Data, &self.url.data_key),
            ]
        };
        for (purpose, key) in keys {
            let d = self
                .client
                .describe_key()
                .key_id(key)
                .send()
                .await
                .map_err(|e| map_err(key, "DescribeKey", e))?;
            let m = d.key_metadata();
            out.push(KekInfo {
                reference: kek_ref(m.and_then(|m| m.arn()).unwrap_or(key)),
                purpose,
                algorithm: ALGORITHM.into(),
                created: m
                    .and_then(|m| m.creation_date())
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                // Whether this caller may Decrypt is IAM's decision, not visible here.
                can_decrypt: m.is_some_and(|m| m.enabled()),
                token_serial: None,
                public_key_sha256: None,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = KmsUrl::parse("awskms:alias/data?meta=alias/meta").unwrap();
        assert_eq!(u.data_key, "alias/data");
        assert_eq!(u.meta_key, "alias/meta");
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let u = KmsUrl::parse(&format!("awskms:{arn}")).unwrap();
        assert_eq!((u.data_key.as_str(), u.meta_key.as_str()), (arn, arn));
        assert!(KmsUrl::parse("awskms:").is_err());
        assert!(KmsUrl::parse("awskms:k?region=x").is_err());
    }

    /// The codes of transient failures and of refused ciphertext decide; any other code is a
    /// failure worth retrying when the status says the service failed, a refusal otherwise.
    #[test]
    fn errors_are_classed_by_code_then_status() {
        use aws_sdk_kms::error::ErrorMetadata;
        use aws_sdk_kms::operation::decrypt::DecryptError;
        use aws_smithy_types::body::SdkBody;
        let err = |code: &str, status: u16| {
            let e = DecryptError::generic(ErrorMetadata::builder().code(code).message("m").build());
            let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
            map_err("alias/k", "Decrypt", SdkError::service_error(e, raw))
        };
        let unavailable = |e: &Error| matches!(e, Error::KeyUnavailable { .. });
        let denied = |e: &Error| matches!(e, Error::KeyDenied { .. });
        assert!(denied(&err("AccessDeniedException", 400)));
        assert!(unavailable(&err("ThrottlingException", 400)));
        assert!(unavailable(&err("KMSInternalException", 500)));
        assert!(unavailable(&err("SomethingNew", 503)));
        assert!(unavailable(&err("SlowDown", 429)));
        assert!(denied(&err("SomethingNew", 400)));
        assert!(denied(&err("SomethingNew", 403)));
        assert!(matches!(
            err("InvalidCiphertextException", 400),
            Error::Integrity { .. }
        ));
    }

    fn kms(url: &str) -> AwsKms {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .build();
        AwsKms {
            client: Client::from_conf(conf),
            url: KmsUrl::parse(url).unwrap(),
            arns: tokio::sync::OnceCell::new(),
        }
    }

    #[test]
    fn rewrap_within_kms_only_from_kms_to_kms() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::keyservice::LocalKeyring::create(dir.path(), None).unwrap();
        let (a, b) = (kms("awskms:alias/a"), kms("awskms:alias/b?meta=alias/c"));
        let cases: [(&dyn KeyService, &dyn KeyService, bool); 5] = [
            (&a, &b, true),
            (&b, &a, true),
            (&a, &local, false),
            (&local, &a, false),
            (&local, &local, false),
        ];
        for (from, to, within) in cases {
            assert_eq!(from.rewrap_within(to), within, "{from:?} -> {to:?}");
        }
    }
}
