//! The process environment, read once at start-up into the library's typed settings
//! (`custody::settings`). Nothing else in custody reads environment variables, except the
//! AWS SDK's own configuration chain (`AWS_*`).

use std::path::PathBuf;
use std::time::Duration;

use custody::settings::{AwsSettings, ClientSettings, S3Checksums, S3Settings};

/// Everything custody takes from the environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// An unusable `CUSTODY_S3_*` value fails only commands that open an `s3://` store.
    pub s3: std::result::Result<S3Settings, String>,
    pub aws: AwsSettings,
    pub client: ClientSettings,
    /// `CUSTODY_KEYRING_PASSPHRASE` (a `--passphrase-file` wins over it).
    pub passphrase_set: bool,
    /// `CUSTODY_WITNESS_PROFILE`: the AWS profile of an `s3://` witness.
    pub witness_profile: Option<String>,
    /// `AWS_ENDPOINT_URL` is set (it then applies to the repository and the witness alike).
    pub aws_endpoint_set: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A folder variable as it is, even empty (an empty one means the current folder, as it
/// always has).
fn path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from)
}

impl Environment {
    pub fn read() -> Environment {
        // CUSTODY_AWS_TIMEOUT_SECS bounds each attempt (default 30 s).
        let aws = AwsSettings {
            attempt_timeout: var("CUSTODY_AWS_TIMEOUT_SECS")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v > 0)
                .map(Duration::from_secs)
                .unwrap_or(AwsSettings::default().attempt_timeout),
            profile: None,
        };
        let checksums = match var("CUSTODY_S3_CHECKSUMS").as_deref() {
            None | Some("when_required") => Ok(S3Checksums::WhenRequired),
            Some("when_supported") => Ok(S3Checksums::WhenSupported),
            Some(other) => Err(format!(
                "CUSTODY_S3_CHECKSUMS={other:?}: expected when_required or when_supported"
            )),
        };
        let attempts = match var("CUSTODY_S3_MAX_ATTEMPTS") {
            None => Ok(S3Settings::default().max_attempts),
            Some(v) => v.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                format!("CUSTODY_S3_MAX_ATTEMPTS={v:?}: expected a whole number of 1 or more")
            }),
        };
        let s3 =
            checksums.and_then(|checksums| attempts.map(|max_attempts| (checksums, max_attempts)));
        let s3 = s3.map(|(checksums, max_attempts)| S3Settings {
            path_style: var("CUSTODY_S3_PATH_STYLE").map(|v| v != "0"),
            checksums,
            sign_payload: var("CUSTODY_S3_SIGN_PAYLOAD").map(|v| v != "0"),
            multipart_threshold: var("CUSTODY_S3_MULTIPART_MIB")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(64)
                .max(5)
                << 20,
            max_attempts,
            aws: aws.clone(),
        });
        let home = path("HOME");
        let cache_dir = match std::env::var_os("CUSTODY_CACHE_DIR") {
            Some(v) if v == "off" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => path("XDG_CACHE_HOME")
                .map(|p| p.join("custody"))
                .or_else(|| home.as_ref().map(|h| h.join(".cache/custody"))),
        };
        let config_dir = path("CUSTODY_CONFIG_DIR")
            .or_else(|| path("XDG_CONFIG_HOME").map(|p| p.join("custody")))
            .or_else(|| home.as_ref().map(|h| h.join(".config/custody")))
            .unwrap_or_else(|| PathBuf::from(".custody"));
        if let Some(point) = var("CUSTODY_FAILPOINT") {
            custody::failpoint::arm(point);
        }
        Environment {
            s3,
            aws,
            client: ClientSettings {
                cache_dir,
                config_dir,
                username: var("USER").unwrap_or_default(),
            },
            passphrase_set: std::env::var_os("CUSTODY_KEYRING_PASSPHRASE").is_some(),
            witness_profile: var("CUSTODY_WITNESS_PROFILE"),
            aws_endpoint_set: var("AWS_ENDPOINT_URL").is_some(),
        }
    }
}
