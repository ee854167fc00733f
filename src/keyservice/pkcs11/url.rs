//! The `pkcs11:` URL: token, object and module, and the PINs (read from the URL or a file,
//! kept as secrets from the moment they are decoded).

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A parsed `pkcs11:` URL (RFC 7512 subset plus custody's `data-token` options).
///
/// The PINs are [`SecretString`]s from the moment they are decoded or read from their file:
/// zeroized when dropped, left out of `Debug`, and handed only to the token's login
/// ([`Pkcs11Service::open`], which does not keep them).
#[derive(Clone)]
pub struct Pkcs11Url {
    pub token: String,
    pub object: String,
    pub module: String,
    pub(super) pin: Option<SecretString>,
    pub data_token: Option<String>,
    pub(super) data_pin: Option<SecretString>,
    /// `data-key-sha256`: the SHA-256 (hex) of the data key's public half as `key create`
    /// made it (modulus, then exponent). Session keys are wrapped only with a public key that
    /// matches: a key put on the writer's token by whoever has its PIN is refused.
    pub data_key_sha256: Option<String>,
}

impl std::fmt::Debug for Pkcs11Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Url")
            .field("token", &self.token)
            .field("object", &self.object)
            .field("module", &self.module)
            .field("data_token", &self.data_token)
            .field("data_key_sha256", &self.data_key_sha256)
            .finish()
    }
}

fn pct_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::invalid("pkcs11: bad percent escape in the URL"))?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::invalid("pkcs11: URL is not UTF-8"))
}

/// The PIN in a `pin-source` file (a leading `file:` is stripped): its content without
/// trailing `\r`/`\n`. Errors name the file, never its content.
fn read_pin(source: &str) -> Result<SecretString> {
    let path = source.strip_prefix("file:").unwrap_or(source);
    let s = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
    Ok(SecretString::from(s.trim_end_matches(['\n', '\r'])))
}

impl Pkcs11Url {
    pub fn parse(url: &str) -> Result<Pkcs11Url> {
        let rest = url
            .strip_prefix("pkcs11:")
            .ok_or_else(|| Error::invalid("not a pkcs11: URL"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object) = (None, None);
        for attr in path.split(';').filter(|s| !s.is_empty()) {
            match attr.split_once('=') {
                Some(("token", v)) => token = Some(pct_decode(v)?),
                Some(("object", v)) => object = Some(pct_decode(v)?),
                Some(_) => {} // other RFC 7512 path attributes do not select anything here
                None => return Err(Error::invalid("pkcs11: a path attribute lacks '='")),
            }
        }
        let mut u = Pkcs11Url {
            token: token.ok_or_else(|| Error::invalid("pkcs11: URL needs token=LABEL"))?,
            object: object.unwrap_or_else(|| "custody".into()),
            module: String::new(),
            pin: None,
            data_token: None,
            data_pin: None,
            data_key_sha256: None,
        };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Error::invalid("pkcs11: a query attribute lacks '='"))?;
            // Zeroized on drop: the value may be a PIN.
            let v = Zeroizing::new(pct_decode(v)?);
            match k {
                "module-path" => u.module = v.as_str().to_owned(),
                "pin-value" => u.pin = Some(SecretString::from(v.as_str())),
                "pin-source" => u.pin = Some(read_pin(&v)?),
                "data-token" => u.data_token = Some(v.as_str().to_owned()),
                "data-pin-value" => u.data_pin = Some(SecretString::from(v.as_str())),
                "data-pin-source" => u.data_pin = Some(read_pin(&v)?),
                "data-key-sha256" => {
                    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(Error::invalid(
                            "pkcs11: data-key-sha256 is 64 hex digits (as key create prints it)",
                        ));
                    }
                    u.data_key_sha256 = Some(v.to_ascii_lowercase());
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "pkcs11: unknown query attribute {k:?}"
                    )))
                }
            }
        }
        if u.module.is_empty() {
            return Err(Error::invalid(
                "pkcs11: URL needs module-path=PATH (the PKCS#11 library)",
            ));
        }
        Ok(u)
    }

    /// The URL without PINs, for messages (add `pin-source=FILE` to use it).
    pub fn public(&self) -> String {
        let mut u = format!(
            "pkcs11:token={};object={}?module-path={}",
            self.token, self.object, self.module
        );
        if let Some(t) = &self.data_token {
            u.push_str(&format!("&data-token={t}"));
        }
        if let Some(f) = &self.data_key_sha256 {
            u.push_str(&format!("&data-key-sha256={f}"));
        }
        u
    }

    pub(super) fn meta_ref(&self) -> String {
        format!("pkcs11:token={};object={}-meta", self.token, self.object)
    }

    pub(super) fn data_ref(&self) -> String {
        format!("pkcs11:object={}-data", self.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use secrecy::ExposeSecret;

    #[test]
    fn urls_and_pin_redaction() {
        let u = Pkcs11Url::parse("pkcs11:token=My%20Token;object=vault?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234").unwrap();
        assert_eq!(u.token, "My Token");
        assert_eq!(u.object, "vault");
        assert_eq!(u.pin.as_ref().map(|p| p.expose_secret()), Some("1234"));
        assert!(!format!("{u:?}").contains("1234"));
        assert!(!u.public().contains("1234"));
        assert!(Pkcs11Url::parse("pkcs11:object=x?module-path=/m").is_err());
        assert!(Pkcs11Url::parse("pkcs11:token=t").is_err());
        assert!(Pkcs11Url::parse("pkcs11:token=t?module-path=/m&bogus=1").is_err());
    }

    #[test]
    fn pin_files_and_errors_never_show_a_pin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "5678\r\n").unwrap();
        let url = format!(
            "pkcs11:token=w?module-path=/m&pin-value=12%2534&data-token=r&data-pin-source=file:{}",
            file.display()
        );
        let u = Pkcs11Url::parse(&url).unwrap();
        assert_eq!(u.pin.as_ref().map(|p| p.expose_secret()), Some("12%34"));
        assert_eq!(u.data_pin.as_ref().map(|p| p.expose_secret()), Some("5678"));
        let shown = format!("{u:?} {}", u.public());
        assert!(
            !shown.contains("12%34") && !shown.contains("5678"),
            "{shown}"
        );
        for bad in [
            "pkcs11:token=t?module-path=/m&pin-value=4242&bogus=1",
            "pkcs11:token=t?module-path=/m&pin-value=4242%zz",
            "pkcs11:token=t?pin-value=4242",
            "pkcs11:token=t?module-path=/m&pin-value=4242&data-pin-source=/nonexistent/pin",
        ] {
            let e = Pkcs11Url::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("4242"), "{e}");
        }
    }
}
