//! Shared AWS SDK configuration: the standard chain (environment, profiles, web identity,
//! `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`), an HTTP client on ring-based
//! rustls (no second crypto library), and bounded timeouts so an unreachable or silent
//! service fails with a clear error instead of hanging. Throttling and 5xx answers are
//! retried by the SDK's standard retry strategy (exponential backoff with jitter, 3 attempts
//! unless `AWS_MAX_ATTEMPTS` says otherwise); 4xx answers that cannot succeed are not.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::settings::AwsSettings;

/// Loads the SDK configuration from the standard AWS chain.
pub async fn load(settings: &AwsSettings) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let attempt = settings.attempt_timeout;
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * 4)
        .build();
    let mut chain = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(p) = &settings.profile {
        chain = chain.profile_name(p);
    }
    chain.load().await
}

/// An SDK error as one line: each cause's message, outermost first, none repeated. (The SDK's
/// `DisplayErrorContext` appends the whole error in its debug form, which is not for users.)
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
