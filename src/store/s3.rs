//! `s3://bucket[/prefix]` through aws-sdk-s3: AWS S3 and S3-compatible servers (Ceph RGW,
//! MinIO, Garage, moto, s3s...).
//!
//! - Endpoint, region and credentials from the standard AWS chain (`AWS_ENDPOINT_URL`,
//!   `AWS_REGION`, `AWS_PROFILE`, web identity...). Path-style addressing is automatic for IP
//!   and `localhost` endpoints and forced with `CUSTODY_S3_PATH_STYLE=1`.
//! - Checksums: the SDK would send CRC32 checksum headers on every upload, which several
//!   S3-compatible servers reject; custody asks for them only where an operation requires them
//!   (`when_required`) and verifies every object itself (AEAD). `CUSTODY_S3_CHECKSUMS=
//!   when_supported` restores the SDK default for servers that accept it.
//! - Payload signing: the signature covers upload bodies (a SHA-256 of every byte, computed
//!   here and again by the server) only over plain `http://` to a host that is not loopback.
//!   TLS protects a body in flight, loopback has no path to tamper on, and every object is
//!   authenticated when read. `CUSTODY_S3_SIGN_PAYLOAD=1` signs always, `0` never.
//! - Objects above `CUSTODY_S3_MULTIPART_MIB` (default 64) go up in 16 MiB multipart parts;
//!   a failed multipart upload is aborted. Ranged GETs serve restores. Throttling (503 SlowDown)
//!   and 5xx are retried by the SDK with exponential backoff and jitter; 4xx are not.

mod download;
mod endpoint;
mod lock;

use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::object_lock::{LockMode, LockSettings};
use super::{FileKind, Store};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::settings::{S3Checksums, S3Settings};

const PART: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    pub fn parse(url: &str) -> Result<S3Url> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::invalid("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(
                "s3:// URL needs a bucket: s3://bucket[/prefix]",
            ));
        }
        let prefix = prefix.trim_matches('/');
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

pub struct S3Store {
    client: Client,
    url: S3Url,
    multipart_threshold: usize,
    max_attempts: u32,
    /// Upload bodies are covered by the request signature (settings: `sign_payload`).
    sign_payload: bool,
    /// Object Lock retention and conditional writes asked for on every put (§21).
    lock: RwLock<Option<LockSettings>>,
}

fn object_lock_mode(m: LockMode) -> ObjectLockMode {
    match m {
        LockMode::Governance => ObjectLockMode::Governance,
        LockMode::Compliance => ObjectLockMode::Compliance,
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("url", &self.url).finish()
    }
}

type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

/// Maps an SDK failure to a store error that says what and where. Answers without an error
/// body (HEAD, some servers' 4xx) are classified by their status.
fn map_err<E>(what: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let msg = format!(
                "{what}: HTTP {status} {code} {}",
                se.err().message().unwrap_or("")
            );
            match (code.as_str(), status) {
                ("NoSuchBucket", _) => {
                    Error::NotFound(format!("{msg} (the bucket does not exist)"))
                }
                ("NoSuchKey" | "NotFound" | "NoSuchUpload", _) | ("", 404) => {
                    Error::NotFound(what.to_string())
                }
                (
                    "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "Forbidden"
                    | "AllAccessDisabled"
                    | "InvalidToken"
                    | "ExpiredToken",
                    _,
                )
                | (_, 401 | 403) => Error::StorageDenied(msg),
                ("InvalidRange", _) | (_, 416) => {
                    Error::integrity(what, "object shorter than the requested range")
                }
                // HEAD answers carry no body: a bare 400 is most often a name the server refuses.
                ("", 400) => Error::Unavailable(format!(
                    "{what}: HTTP 400 Bad Request without details: check the bucket name (S3 \
                     names are 3 to 63 lowercase letters, digits, dots and hyphens) and the \
                     region (AWS_REGION)"
                )),
                ("", _) => Error::Unavailable(format!("{msg}{}", crate::error::error_chain(&e))),
                _ => Error::Unavailable(msg),
            }
        }
        _ => Error::Unavailable(format!("{what}: {}", crate::error::error_chain(&e))),
    }
}

impl S3Store {
    /// Opens the store with the standard AWS configuration chain.
    pub async fn open(url: &str, settings: &S3Settings) -> Result<S3Store> {
        S3Store::with_config(url, &crate::aws::load(&settings.aws).await, settings)
    }

    /// Opens the store with a given SDK configuration (tests with several servers at once).
    pub fn with_config(
        url: &str,
        conf: &aws_config::SdkConfig,
        settings: &S3Settings,
    ) -> Result<S3Store> {
        let url = S3Url::parse(url)?;
        let endpoint = endpoint::Endpoint::parse(endpoint::s3_endpoint(conf).as_deref());
        let path_style = settings.path_style.unwrap_or(endpoint.no_dns_name);
        let sign_payload = settings.sign_payload.unwrap_or(endpoint.sign_payload());
        let (req, resp) = match settings.checksums {
            S3Checksums::WhenSupported => (
                RequestChecksumCalculation::WhenSupported,
                ResponseChecksumValidation::WhenSupported,
            ),
            S3Checksums::WhenRequired => (
                RequestChecksumCalculation::WhenRequired,
                ResponseChecksumValidation::WhenRequired,
            ),
        };
        let retry = aws_sdk_s3::config::retry::RetryConfig::standard()
            .with_max_attempts(settings.max_attempts)
            .with_initial_backoff(Duration::from_millis(200));
        let s3conf = aws_sdk_s3::config::Builder::from(conf)
            .retry_config(retry)
            .force_path_style(path_style)
            .request_checksum_calculation(req)
            .response_checksum_validation(resp)
            .build();
        Ok(S3Store {
            client: Client::from_conf(s3conf),
            url,
            multipart_threshold: settings.multipart_threshold,
            max_attempts: settings.max_attempts.max(1),
            sign_payload,
            lock: RwLock::new(None),
        })
    }

    /// One HeadObject: size, and (under Object Lock) the retain-until date.
    async fn head(
        &self,
        kind: FileKind,
        id: &Id,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        self.client
            .head_object()
            .bucket(&self.url.bucket)
            .key(self.key(kind, id))
            .send()
            .await
            .map_err(|e| map_err(&self.name(kind, id), e))
    }

    /// Outside us-east-1, AWS wants the region as a new bucket's location constraint.
    fn bucket_location(&self) -> Option<aws_sdk_s3::types::CreateBucketConfiguration> {
        let region = self.client.config().region().map(|r| r.to_string());
        region.filter(|r| r != "us-east-1").map(|r| {
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    r.as_str(),
                ))
                .build()
        })
    }

    /// The retention every write asks for (none without Object Lock, or with 0 days).
    fn retention(&self) -> Option<LockSettings> {
        self.lock.read().expect("lock").filter(|l| l.days > 0)
    }

    fn key(&self, kind: FileKind, id: &Id) -> String {
        format!("{}{}", self.url.prefix, kind.path(id))
    }

    fn name(&self, kind: FileKind, id: &Id) -> String {
        format!("s3://{}/{}", self.url.bucket, self.key(kind, id))
    }

    /// One PUT (or a multipart upload), with the retention the repository asks for and, when
    /// `if_none_match`, refusing to replace an object (412 is [`Error::AlreadyExists`]).
    async fn put_object(
        &self,
        kind: FileKind,
        id: &Id,
        data: Bytes,
        if_none_match: bool,
    ) -> Result<()> {
        self.put_key(
            &self.key(kind, id),
            &self.name(kind, id),
            data,
            if_none_match,
        )
        .await
    }

    async fn put_key(&self, key: &str, name: &str, data: Bytes, if_none_match: bool) -> Result<()> {
        let (key, name) = (key.to_string(), name.to_string());
        if data.len() > self.multipart_threshold {
            return self.put_multipart(&key, &name, data).await;
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.url.bucket)
            .key(&key)
            .body(ByteStream::from(data));
        if let Some(l) = self.retention() {
            // S3 requires a checksum on writes to a bucket with Object Lock.
            req = req
                .object_lock_mode(object_lock_mode(l.mode))
                .object_lock_retain_until_date(lock::smithy_time(l.until_from_now()))
                .checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        if if_none_match {
            req = req.if_none_match("*");
        }
        let mut req = req.customize();
        if !self.sign_payload {
            req = req.disable_payload_signing();
        }
        match req.send().await {
            Ok(_) => Ok(()),
            // 412: the object exists; 409: a concurrent conditional write of it.
            Err(SdkError::ServiceError(se)) if matches!(se.raw().status().as_u16(), 409 | 412) => {
                Err(Error::AlreadyExists(name))
            }
            Err(e) => Err(map_err(&name, e)),
        }
    }

    async fn put_multipart(&self, key: &str, name: &str, data: Bytes) -> Result<()> {
        let lock = self.retention();
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.url.bucket)
            .key(key);
        if let Some(l) = lock {
            create = create
                .object_lock_mode(object_lock_mode(l.mode))
                .object_lock_retain_until_date(lock::smithy_time(l.until_from_now()))
                .checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        let up = create.send().await.map_err(|e| map_err(name, e))?;
        let upload_id = up.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            for (i, chunk) in data.chunks(PART).enumerate() {
                let n = i as i32 + 1;
                let mut part = self
                    .client
                    .upload_part()
                    .bucket(&self.url.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .set_checksum_algorithm(lock.map(|_| ChecksumAlgorithm::Crc32))
                    .body(ByteStream::from(data.slice_ref(chunk)))
                    .customize();
                if !self.sign_payload {
                    part = part.disable_payload_signing();
                }
                let out = part.send().await.map_err(|e| map_err(name, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.url.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| map_err(name, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            // Leave no half upload behind (and no storage billed for its parts).
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.url.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

#[async_trait]
impl Store for S3Store {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.url.bucket, self.url.prefix)
    }

    async fn create(&self) -> Result<()> {
        let bucket = &self.url.bucket;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => {}
            Err(e) => match map_err(&format!("bucket {bucket}"), e) {
                Error::NotFound(_) => {
                    self.client
                        .create_bucket()
                        .bucket(bucket)
                        .set_create_bucket_configuration(self.bucket_location())
                        .send()
                        .await
                        .map_err(|e| map_err(&format!("creating bucket {bucket}"), e))?;
                    tracing::info!(bucket = %bucket, "created bucket");
                }
                e => return Err(e),
            },
        }
        match self.size(FileKind::Config, &Id::default()).await {
            Ok(_) => Err(Error::AlreadyExists(format!(
                "a repository at {}",
                self.location()
            ))),
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn put(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()> {
        self.put_object(kind, id, data, false).await
    }

    async fn put_new(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()> {
        let conditional = self
            .lock
            .read()
            .expect("lock")
            .is_some_and(|l| l.conditional_writes);
        if !conditional || data.len() > self.multipart_threshold {
            return self.put(kind, id, data).await;
        }
        match self.put_object(kind, id, data.clone(), true).await {
            Err(Error::AlreadyExists(_)) => {
                // A repeated write whose first answer was lost finds its own bytes there.
                if self.get(kind, id).await? == data {
                    Ok(())
                } else {
                    Err(Error::integrity(
                        self.name(kind, id),
                        "another object already stands under this name (written over, or a \
                         forged name taken first); it was not replaced",
                    ))
                }
            }
            r => r,
        }
    }

    fn remote(&self) -> bool {
        true
    }

    fn object_lock(&self) -> Option<&dyn super::object_lock::ObjectLock> {
        Some(self)
    }

    async fn get(&self, kind: FileKind, id: &Id) -> Result<Bytes> {
        self.fetch(kind, id, None, Vec::new())
            .await
            .map(Bytes::from)
    }

    async fn get_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        length: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        if length == 0 {
            buf.clear();
            return Ok(buf);
        }
        let body = self.fetch(kind, id, Some((offset, length)), buf).await?;
        if body.len() as u64 != length {
            return Err(Error::integrity(
                self.name(kind, id),
                format!("object shorter than requested range {offset}+{length}"),
            ));
        }
        Ok(body)
    }

    async fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        let out = self.head(kind, id).await?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        let prefix = format!("{}{}/", self.url.prefix, kind.dir());
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.url.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| map_err(&format!("listing s3://{}/{prefix}", self.url.bucket), e))?;
            for o in page.contents() {
                let key = o.key().unwrap_or("");
                if let Some(id) = key.rsplit('/').next().and_then(|n| n.parse::<Id>().ok()) {
                    out.push((id, o.size().unwrap_or(0).max(0) as u64));
                }
            }
        }
        out.sort();
        out.dedup_by_key(|(id, _)| *id);
        Ok(out)
    }

    async fn delete(&self, kind: FileKind, id: &Id) -> Result<()> {
        let name = self.name(kind, id);
        match self
            .client
            .delete_object()
            .bucket(&self.url.bucket)
            .key(self.key(kind, id))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_err(&name, e) {
                Error::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::S3Url;

    #[test]
    fn urls() {
        let u = S3Url::parse("s3://bkt/some/prefix/").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("bkt", "some/prefix/")
        );
        let u = S3Url::parse("s3://bkt").unwrap();
        assert_eq!(u.prefix, "");
        assert!(S3Url::parse("s3://").is_err());
    }
}
