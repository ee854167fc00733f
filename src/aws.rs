//! Shared AWS SDK configuration: the standard chain (environment, profiles, web identity,
//! `AWS_ENDPOINT_URL`, `AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`), an HTTP client on ring-based
//! rustls (no second crypto library; plain-HTTP endpoints through [`quick_ack`]), and bounded
//! timeouts so an unreachable or silent service fails with a clear error instead of hanging.
//! Throttling and 5xx answers are retried by the SDK's standard retry strategy (exponential
//! backoff with jitter, 3 attempts unless `AWS_MAX_ATTEMPTS` says otherwise); 4xx answers that
//! cannot succeed are not.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::settings::AwsSettings;

mod quick_ack;

/// Loads the SDK configuration from the standard AWS chain.
pub async fn load(settings: &AwsSettings) -> SdkConfig {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let http = SharedHttpClient::new(quick_ack::QuickAckClient::new(https));
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
