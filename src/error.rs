//! Library errors: semantic variants that callers (and the CLI's exit codes) can act on.
//!
//! No variant carries key material; messages name objects and operations, never secrets.

use std::fmt;

/// Whether retrying the same operation can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Transient (network, throttling, timeouts): retry with backoff.
    Transient,
    /// Retrying the same request cannot help.
    Permanent,
}

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named object, file or snapshot does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An object exists where the operation requires that none does.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Stored data failed verification: tampering, corruption, or a wrong object in its place.
    #[error("integrity failure in {object}: {reason}")]
    Integrity { object: String, reason: String },
    /// An object that opens but whose signer this client does not accept: an unknown key, a
    /// revoked writer, or a writer signing what only the owner may (docs/FORMAT.md §17).
    #[error("untrusted {object}: {reason}")]
    Untrusted { object: String, reason: String },
    /// The store shows an older history than this client or its witness saw before: snapshots
    /// hidden, or the repository put back to an earlier state (docs/FORMAT.md §18).
    #[error("rollback detected: {0}")]
    Rollback(String),
    /// The key service refused the operation (wrong role, policy, disabled key, wrong PIN...).
    #[error("key service denied {operation} with key {key}: {reason}")]
    KeyDenied {
        key: String,
        operation: String,
        reason: String,
    },
    /// The key service could not be reached or did not answer in time.
    #[error("key service unavailable for {operation} with key {key}: {reason}")]
    KeyUnavailable {
        key: String,
        operation: String,
        reason: String,
    },
    /// The object store could not be reached or failed transiently.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The object store refused access.
    #[error("storage access denied: {0}")]
    StorageDenied(String),
    /// A local or remote I/O failure on a named path.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The request itself is wrong (bad argument, bad URL, ambiguous snapshot prefix...).
    #[error("{0}")]
    Invalid(String),
    /// A fault inside custody itself (a worker thread died, a queue closed): a bug to report.
    #[error("internal error: {0}")]
    Internal(String),
    /// Another operation got in the way (a prune condemned data this backup relies on, or
    /// another prune holds the lock); nothing was committed, and a rerun is safe.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A format version or algorithm this build does not accept (including downgrades).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    pub fn integrity(object: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Integrity {
            object: object.to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::Invalid(msg.to_string())
    }

    /// Whether a retry may succeed; used by stores and key services for backoff decisions.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Error::Unavailable(_) | Error::KeyUnavailable { .. } => RetryClass::Transient,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::WouldBlock => RetryClass::Transient,
                _ => RetryClass::Permanent,
            },
            _ => RetryClass::Permanent,
        }
    }

    /// True for errors that mean stored data cannot be trusted.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            Error::Integrity { .. } | Error::Untrusted { .. } | Error::Rollback(_)
        )
    }

    /// True for an object refused for its signer alone (it opened and verified).
    pub fn is_untrusted(&self) -> bool {
        matches!(self, Error::Untrusted { .. })
    }

    pub fn untrusted(object: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Untrusted {
            object: object.to_string(),
            reason: reason.to_string(),
        }
    }

    /// True for errors raised by the key service.
    pub fn is_key_service(&self) -> bool {
        matches!(self, Error::KeyDenied { .. } | Error::KeyUnavailable { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes as one line: each message once, outermost first (an error's own
/// message often holds its source's already). Used for every error the CLI prints, and for
/// AWS SDK errors, whose `DisplayErrorContext` appends a debug form that is not for users.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod error_chain_tests {
    use super::error_chain;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_are_joined_once_without_debug_forms() {
        let e = E(
            "dispatch failure",
            Some(Box::new(E(
                "io error",
                Some(Box::new(E("Connection refused (os error 111)", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "dispatch failure: io error: Connection refused (os error 111)"
        );
        let repeated = E(
            "refused (os error 111)",
            Some(Box::new(E("os error 111", None))),
        );
        assert_eq!(error_chain(&repeated), "refused (os error 111)");
    }
}
