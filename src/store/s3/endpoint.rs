//! Where the S3 client will connect, and what that decides: path-style addressing for a
//! server named by IP address or `localhost`, and whether request signatures cover upload
//! bodies (only over plain http to a host that is not loopback).

use aws_types::service_config::ServiceConfigKey;

/// The endpoint the S3 client uses, resolved as the SDK resolves it: one set in code, else an
/// S3-only one (`AWS_ENDPOINT_URL_S3`, a profile's `[services]` entry), else the shared one
/// (`AWS_ENDPOINT_URL`, a profile's `endpoint_url`). `None`: AWS's own, over TLS.
pub(super) fn s3_endpoint(conf: &aws_config::SdkConfig) -> Option<String> {
    let shared = conf.endpoint_url().map(str::to_string);
    if conf.get_origin("endpoint_url").is_client_config() {
        return shared;
    }
    let key = ServiceConfigKey::builder()
        .service_id("S3")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build();
    match (key, conf.service_config()) {
        (Ok(key), Some(services)) => services.load_config(key).or(shared),
        _ => shared,
    }
}

/// What an endpoint URL says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// `http://` (any case): nothing protects a request in flight.
    pub(super) plain_http: bool,
    /// The host is `localhost` or a loopback address: no path to tamper on.
    pub(super) loopback: bool,
    /// The host is an IP address or `localhost`: no DNS name to put a bucket in.
    pub(super) no_dns_name: bool,
}

impl Endpoint {
    pub(super) fn parse(endpoint: Option<&str>) -> Endpoint {
        let Some(uri) = endpoint.and_then(|e| e.parse::<http::Uri>().ok()) else {
            // AWS's own endpoint (or one the SDK will refuse): TLS and DNS names.
            return Endpoint {
                plain_http: endpoint.is_some(),
                loopback: false,
                no_dns_name: false,
            };
        };
        let host = uri.host().unwrap_or("");
        // `localhost.` is left a name to resolve: it may not be in /etc/hosts.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let ip = host.parse::<std::net::IpAddr>().ok();
        let localhost = host == "localhost";
        Endpoint {
            plain_http: !uri
                .scheme_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("https")),
            loopback: localhost || ip.is_some_and(|ip| ip.is_loopback()),
            no_dns_name: localhost || ip.is_some(),
        }
    }

    /// Whether upload bodies are signed when the settings leave it open: over plain http to
    /// another host, the one transport on which nothing else protects them in flight.
    pub(super) fn sign_payload(&self) -> bool {
        self.plain_http && !self.loopback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signs(e: &str) -> bool {
        Endpoint::parse(Some(e)).sign_payload()
    }

    #[test]
    fn bodies_are_signed_over_plain_http_to_other_hosts_only() {
        for e in [
            "http://minio.lan:9000",
            "HTTP://minio.lan:9000",
            "http://10.0.0.5:9000",
            "http://localhost:pw@lan-host:9000",
            "http://localhost.evil.example:9000",
            "http://localhost.:9000",
            "http://[fd00::1]:9000",
            "minio.lan:9000",
        ] {
            assert!(signs(e), "{e}");
        }
        for e in [
            "https://s3.eu-west-1.amazonaws.com",
            "HTTPS://minio.lan",
            "http://127.0.0.1:9000",
            "http://127.8.9.10:9000",
            "http://localhost:9000",
            "http://LOCALHOST:9000/",
            "http://[::1]:9000",
        ] {
            assert!(!signs(e), "{e}");
        }
        // AWS's own endpoint: TLS.
        assert!(!Endpoint::parse(None).sign_payload());
        // Not a URL at all: signed (the SDK will refuse it anyway).
        assert!(signs("http://[::1"));
    }

    #[test]
    fn path_style_for_ip_addresses_and_localhost() {
        for (e, path_style) in [
            ("http://127.0.0.1:9000", true),
            ("http://[::1]:9000", true),
            ("http://10.1.2.3", true),
            ("http://localhost:3900", true),
            ("https://s3.example.com", false),
            ("http://garage.lan:3900", false),
        ] {
            assert_eq!(Endpoint::parse(Some(e)).no_dns_name, path_style, "{e}");
        }
        assert!(!Endpoint::parse(None).no_dns_name);
    }
}
