//! Object Lock and versions on S3 (docs/FORMAT.md §21).

use async_trait::async_trait;
use aws_sdk_s3::types::{
    BucketVersioningStatus, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockRetention, ObjectLockRetentionMode, ObjectLockRule,
};
use chrono::{DateTime, Utc};

use super::{map_err, S3Store};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::store::object_lock::{BucketLock, LockMode, LockSettings, ObjectLock, ObjectVersion};
use crate::store::FileKind;

pub(super) fn smithy_time(t: DateTime<Utc>) -> aws_sdk_s3::primitives::DateTime {
    aws_sdk_s3::primitives::DateTime::from_secs(t.timestamp())
}

fn chrono_time(t: &aws_sdk_s3::primitives::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default()
}

/// A call the server does not implement, or a configuration it does not have.
fn not_implemented<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(se) => matches!(
            se.err().code(),
            Some("NotImplemented" | "ObjectLockConfigurationNotFoundError")
        ),
        _ => false,
    }
}

fn retention_mode(m: LockMode) -> ObjectLockRetentionMode {
    match m {
        LockMode::Governance => ObjectLockRetentionMode::Governance,
        LockMode::Compliance => ObjectLockRetentionMode::Compliance,
    }
}

#[async_trait]
impl ObjectLock for S3Store {
    fn configure(&self, settings: Option<LockSettings>) {
        *self.lock.write().expect("lock") = settings;
    }

    fn settings(&self) -> Option<LockSettings> {
        *self.lock.read().expect("lock")
    }

    async fn bucket_lock(&self) -> Result<BucketLock> {
        let bucket = &self.url.bucket;
        let what = format!("bucket {bucket}");
        if let Err(e) = self.client.head_bucket().bucket(bucket).send().await {
            return match map_err(&what, e) {
                Error::NotFound(_) => Ok(BucketLock::default()),
                e => Err(e),
            };
        }
        let mut out = BucketLock {
            exists: true,
            ..BucketLock::default()
        };
        match self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(c) => {
                let c = c.object_lock_configuration();
                out.lock_enabled =
                    c.and_then(|c| c.object_lock_enabled()) == Some(&ObjectLockEnabled::Enabled);
                out.default = c
                    .and_then(|c| c.rule())
                    .and_then(|r| r.default_retention())
                    .and_then(|d| {
                        let mode = match d.mode()? {
                            ObjectLockRetentionMode::Compliance => LockMode::Compliance,
                            _ => LockMode::Governance,
                        };
                        let days = d
                            .days()
                            .map(|d| d.max(0) as u32)
                            .or_else(|| d.years().map(|y| (y.max(0) * 365) as u32))?;
                        Some((mode, days))
                    });
            }
            // No configuration (404), or a server that has no Object Lock (501).
            Err(e) if not_implemented(&e) => {}
            Err(e) => match map_err(&what, e) {
                Error::NotFound(_) => {}
                e => return Err(e),
            },
        }
        // Object Lock implies versioning, which S3 then never lets anyone suspend. Otherwise
        // asked only to say what is missing: a server without versioning may not know the
        // call at all (501).
        out.versioning = out.lock_enabled
            || match self
                .client
                .get_bucket_versioning()
                .bucket(bucket)
                .send()
                .await
            {
                Ok(v) => v.status() == Some(&BucketVersioningStatus::Enabled),
                Err(e) if not_implemented(&e) => false,
                Err(e) => match map_err(&what, e) {
                    Error::StorageDenied(m) => return Err(Error::StorageDenied(m)),
                    _ => false,
                },
            };
        Ok(out)
    }

    async fn create_locked_bucket(&self) -> Result<()> {
        let bucket = &self.url.bucket;
        self.client
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true)
            .set_create_bucket_configuration(self.bucket_location())
            .send()
            .await
            .map_err(|e| map_err(&format!("creating bucket {bucket} with Object Lock"), e))?;
        tracing::info!(bucket = %bucket, "created bucket with Object Lock");
        Ok(())
    }

    async fn set_default_retention(&self, mode: LockMode, days: u32) -> Result<()> {
        let bucket = &self.url.bucket;
        let rule = ObjectLockRule::builder()
            .default_retention(
                DefaultRetention::builder()
                    .mode(retention_mode(mode))
                    .days(days as i32)
                    .build(),
            )
            .build();
        self.client
            .put_object_lock_configuration()
            .bucket(bucket)
            .object_lock_configuration(
                ObjectLockConfiguration::builder()
                    .object_lock_enabled(ObjectLockEnabled::Enabled)
                    .rule(rule)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_err(&format!("setting bucket {bucket}'s default retention"), e))?;
        Ok(())
    }

    async fn retain_until(&self, kind: FileKind, id: &Id) -> Result<Option<DateTime<Utc>>> {
        let out = self.head(kind, id).await?;
        Ok(out.object_lock_retain_until_date().map(chrono_time))
    }

    async fn extend_retention(&self, kind: FileKind, id: &Id, until: DateTime<Utc>) -> Result<()> {
        let mode = self.settings().map_or(LockMode::Governance, |s| s.mode);
        let name = self.name(kind, id);
        self.client
            .put_object_retention()
            .bucket(&self.url.bucket)
            .key(self.key(kind, id))
            .retention(
                ObjectLockRetention::builder()
                    .mode(retention_mode(mode))
                    .retain_until_date(smithy_time(until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_err(&format!("{name}: extending its retention"), e))?;
        Ok(())
    }

    async fn versions(&self) -> Result<Vec<ObjectVersion>> {
        let bucket = &self.url.bucket;
        let prefix = &self.url.prefix;
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await
                .map_err(|e| map_err(&format!("listing versions in s3://{bucket}/{prefix}"), e))?;
            let rel = |k: Option<&str>| {
                k.and_then(|k| k.strip_prefix(prefix.as_str()))
                    .map(str::to_string)
            };
            for v in page.versions() {
                if let (Some(path), Some(version), Some(t)) =
                    (rel(v.key()), v.version_id(), v.last_modified())
                {
                    out.push(ObjectVersion {
                        path,
                        version: version.to_string(),
                        modified: chrono_time(t),
                        delete_marker: false,
                        latest: v.is_latest().unwrap_or(false),
                        etag: v.e_tag().map(str::to_string),
                    });
                }
            }
            for m in page.delete_markers() {
                if let (Some(path), Some(version), Some(t)) =
                    (rel(m.key()), m.version_id(), m.last_modified())
                {
                    out.push(ObjectVersion {
                        path,
                        version: version.to_string(),
                        modified: chrono_time(t),
                        delete_marker: true,
                        latest: m.is_latest().unwrap_or(false),
                        etag: None,
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                return Err(Error::Unavailable(format!(
                    "listing versions in s3://{bucket}/{prefix}: the server said there is more \
                     but gave no place to go on from"
                )));
            }
        }
        Ok(out)
    }

    async fn restore_version(&self, path: &str, version: &str) -> Result<()> {
        let bucket = &self.url.bucket;
        let key = format!("{}{path}", self.url.prefix);
        let name = format!("s3://{bucket}/{key} (version {version})");
        // Read and written again rather than CopyObject: the same request on every server,
        // with the retention and checksum a locked bucket wants on a write.
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .version_id(version)
            .send()
            .await
            .map_err(|e| map_err(&name, e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Error::Unavailable(format!("{name}: download broke off: {e}")))?
            .into_bytes();
        self.put_key(&key, &name, body, false).await
    }

    async fn probe_conditional_writes(&self) -> Result<bool> {
        let key = format!("{}probe-if-none-match", self.url.prefix);
        let name = format!("s3://{}/{key}", self.url.bucket);
        let put = |body: &'static [u8], conditional: bool| {
            self.client
                .put_object()
                .bucket(&self.url.bucket)
                .key(&key)
                .set_if_none_match(conditional.then(|| "*".to_string()))
                // A bucket with default retention wants a checksum on every write.
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
                .body(aws_sdk_s3::primitives::ByteStream::from_static(body))
                .send()
        };
        // The first write is plain: a probe an earlier run left behind must not fail it.
        put(b"1", false).await.map_err(|e| map_err(&name, e))?;
        let honoured = match put(b"2", true).await {
            Ok(_) => false,
            Err(e) => {
                let status = match &e {
                    aws_sdk_s3::error::SdkError::ServiceError(se) => se.raw().status().as_u16(),
                    _ => 0,
                };
                // Anything but "precondition failed" (or "conflict") is a server that does
                // not take the header as meant.
                if status != 412 && status != 409 {
                    tracing::debug!("{name}: second conditional write: {}", map_err(&name, e));
                    false
                } else {
                    true
                }
            }
        };
        let _ = self
            .client
            .delete_object()
            .bucket(&self.url.bucket)
            .key(&key)
            .send()
            .await;
        Ok(honoured)
    }
}
