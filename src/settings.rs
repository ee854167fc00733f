//! Settings the library takes from its caller, never from the environment: the `custody`
//! binary reads the environment once, at start-up, and passes these down, so that nothing
//! deep in the library changes behaviour because of a variable read along the way.

use std::path::PathBuf;
use std::time::Duration;

/// Timeouts of AWS SDK clients (S3 and KMS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// Bounds each attempt of a request; connecting gets at most 5 s of it, and a whole
    /// operation (all retries) four times it.
    pub attempt_timeout: Duration,
    /// A named profile of the shared AWS configuration files instead of the default chain's
    /// (a witness bucket at another provider, with its own endpoint and credentials).
    pub profile: Option<String>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            attempt_timeout: Duration::from_secs(30),
            profile: None,
        }
    }
}

/// When the S3 client sends and checks checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum S3Checksums {
    /// Only where an operation requires them: several S3-compatible servers reject the
    /// checksum headers the SDK would otherwise send on every upload.
    #[default]
    WhenRequired,
    /// The SDK's default, for servers that accept it.
    WhenSupported,
}

/// How `s3://` stores talk to their server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `None`: path-style for IP and `localhost` endpoints, virtual-hosted otherwise.
    pub path_style: Option<bool>,
    pub checksums: S3Checksums,
    /// Whether request signatures cover upload bodies (SHA-256 of every byte, on both sides).
    /// `None`: only over plain `http://` to a host that is not loopback, the one transport on
    /// which nothing else protects a body in flight (TLS does; so does loopback).
    pub sign_payload: Option<bool>,
    /// Objects above this size go up as multipart uploads.
    pub multipart_threshold: usize,
    /// Attempts per request, the first included: the SDK's for requests that fail (5xx,
    /// throttling, dropped connections, timeouts), and the store's own for downloads whose
    /// body breaks off or comes up short. Backoff is exponential with jitter.
    pub max_attempts: u32,
    pub aws: AwsSettings,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            path_style: None,
            checksums: S3Checksums::default(),
            sign_payload: None,
            multipart_threshold: 64 << 20,
            max_attempts: 8,
            aws: AwsSettings::default(),
        }
    }
}

/// Where this client keeps its own files, and who it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientSettings {
    /// Base folder of local caches (`<base>/<repository id>/...`); `None` turns them off.
    pub cache_dir: Option<PathBuf>,
    /// Base folder of default keyrings (`<base>/keyrings/<repository id>`).
    pub config_dir: PathBuf,
    /// Recorded in snapshots as the user who made them.
    pub username: String,
}
