//! Key policies (docs/FORMAT.md §20): where a repository's KEKs may be. Key holders set one
//! (signed by the owner, kept in the repository); every command checks the key services it
//! is given and the wrapped keys it reads against it, so that no key is created, moved or
//! used outside the places the policy names (regulated data: keys stay in one jurisdiction).
//! The checks here are pure: they look at KEK references and descriptions only.

use serde::{Deserialize, Serialize};

use super::KekInfo;
use crate::error::{Error, Result};
use crate::format::wrapped::WrappedKey;

/// What a key policy allows. An absent or empty list allows anything of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// `1`.
    pub format: u32,
    /// Key-service kinds allowed: `local`, `awskms`, `pkcs11`, `quorum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "AwsRules::is_empty")]
    pub awskms: AwsRules,
    #[serde(default, skip_serializing_if = "Pkcs11Rules::is_empty")]
    pub pkcs11: Pkcs11Rules,
    #[serde(default, skip_serializing_if = "QuorumRules::is_empty")]
    pub quorum: QuorumRules,
}

/// Where KMS keys may be, read from their ARNs (`arn:<partition>:kms:<region>:<account>:key/...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsRules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
}

impl AwsRules {
    fn is_empty(&self) -> bool {
        self.regions.is_empty() && self.accounts.is_empty()
    }
}

/// Which tokens may hold PKCS#11 keys, by serial number (`CK_TOKEN_INFO.serialNumber`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Rules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_serials: Vec<String>,
    /// Fingerprints of the data key's public half (as `key create` prints in
    /// `data-key-sha256`): a session key is wrapped only with one of them. `init` records the
    /// token's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_key_sha256: Vec<String>,
}

impl Pkcs11Rules {
    fn is_empty(&self) -> bool {
        self.token_serials.is_empty() && self.data_key_sha256.is_empty()
    }
}

/// Which holders a quorum may have, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumRules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
}

impl QuorumRules {
    fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

/// The service kind of a KEK reference or URL (`awskms:...` -> `awskms`).
fn kind_of(reference: &str) -> &str {
    reference.split(':').next().unwrap_or("")
}

/// Region and account of a KMS key ARN, if `reference` holds one.
fn arn_parts(reference: &str) -> Option<(&str, &str)> {
    let arn = reference.strip_prefix("awskms:").unwrap_or(reference);
    let arn = arn.split(['?', '&']).next()?;
    let mut it = arn.split(':');
    match (it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region), Some(account)) => Some((region, account)),
        _ => None,
    }
}

impl KeyPolicy {
    pub fn parse(bytes: &[u8], what: &str) -> Result<KeyPolicy> {
        let p: KeyPolicy = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("key policy {what}: {e}")))?;
        if p.format != 1 {
            return Err(Error::invalid(format!(
                "key policy {what}: format {} (this version reads 1)",
                p.format
            )));
        }
        for s in &p.services {
            if !["local", "awskms", "pkcs11", "quorum"].contains(&s.as_str()) {
                return Err(Error::invalid(format!(
                    "key policy {what}: unknown service {s:?} (local, awskms, pkcs11, quorum)"
                )));
            }
        }
        Ok(p)
    }

    fn refuse(key: &str, rule: String) -> Error {
        // A URL's query may hold a PIN: never shown.
        Error::KeyDenied {
            key: key.split('?').next().unwrap_or(key).to_string(),
            operation: "key policy".into(),
            reason: format!("outside the repository's key policy: {rule}"),
        }
    }

    /// Checks one KEK reference (or key-service URL): its kind, and for KMS the region and
    /// account of its ARN. A KMS key named without an ARN (an alias, a bare id) is refused
    /// while the policy restricts regions or accounts: where it lives cannot be told.
    pub fn check_reference(&self, reference: &str) -> Result<()> {
        let kind = kind_of(reference);
        if !self.services.is_empty() && !self.services.iter().any(|s| s == kind) {
            return Err(Self::refuse(
                reference,
                format!("key services allowed: {}", self.services.join(", ")),
            ));
        }
        if kind == "awskms" && !self.awskms.is_empty() {
            let Some((region, account)) = arn_parts(reference) else {
                return Err(Self::refuse(
                    reference,
                    "a KMS key must be named by its ARN, so that its region and account can be checked".into(),
                ));
            };
            if !self.awskms.regions.is_empty() && !self.awskms.regions.iter().any(|r| r == region) {
                return Err(Self::refuse(
                    reference,
                    format!(
                        "region {region} (allowed: {})",
                        self.awskms.regions.join(", ")
                    ),
                ));
            }
            if !self.awskms.accounts.is_empty()
                && !self.awskms.accounts.iter().any(|a| a == account)
            {
                return Err(Self::refuse(
                    reference,
                    format!(
                        "account {account} (allowed: {})",
                        self.awskms.accounts.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks only the kind of a key-service URL (before `key create` knows more).
    pub fn check_kind(&self, url: &str) -> Result<()> {
        let kind = kind_of(url);
        if !self.services.is_empty() && !self.services.iter().any(|s| s == kind) {
            return Err(Self::refuse(
                url.split('?').next().unwrap_or(url),
                format!("key services allowed: {}", self.services.join(", ")),
            ));
        }
        Ok(())
    }

    /// Checks, before `key create` makes KMS keys, the region they would be made in.
    pub fn check_new_kms_region(&self, region: Option<&str>) -> Result<()> {
        if self.awskms.regions.is_empty() {
            return Ok(());
        }
        let r = region.unwrap_or("(none)");
        if self.awskms.regions.iter().any(|a| a == r) {
            Ok(())
        } else {
            Err(Self::refuse(
                &format!("new KMS keys in {r}"),
                format!("region {r} (allowed: {})", self.awskms.regions.join(", ")),
            ))
        }
    }

    /// Checks the holders a quorum reference names (`quorum:2-of-3:alice,bob,carol`).
    fn check_holders(&self, reference: &str) -> Result<()> {
        if self.quorum.holders.is_empty() {
            return Ok(());
        }
        let names = reference.rsplit(':').next().unwrap_or("");
        for n in names.split(',') {
            if !self.quorum.holders.iter().any(|h| h == n) {
                return Err(Self::refuse(
                    reference,
                    format!("holder {n} (allowed: {})", self.quorum.holders.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Checks a wrapped key as read from the repository: the KEK it names and, for a quorum,
    /// every holder and every holder's KEK.
    pub fn check_wrapped(&self, wrapped: &WrappedKey) -> Result<()> {
        self.check_reference(&wrapped.kek)?;
        if wrapped.algorithm == super::quorum::ALGORITHM {
            self.check_holders(&wrapped.kek)?;
            for part in super::quorum::parts_of_record(wrapped)? {
                if !self.quorum.holders.is_empty() && !self.quorum.holders.contains(&part.holder) {
                    return Err(Self::refuse(
                        &wrapped.kek,
                        format!(
                            "holder {} (allowed: {})",
                            part.holder,
                            self.quorum.holders.join(", ")
                        ),
                    ));
                }
                self.check_reference(&part.wrapped.kek)?;
            }
        }
        Ok(())
    }

    /// Checks a key-service URL as given, before the service is asked anything: its kind,
    /// and every KMS key ARN it names (`awskms:<arn>?meta=<arn>&owner=<arn>`).
    pub fn check_url(&self, url: &str) -> Result<()> {
        self.check_kind(url)?;
        if kind_of(url) == "awskms" && !self.awskms.is_empty() {
            for part in url.split(['?', '&', '=']) {
                let part = part.strip_prefix("awskms:").unwrap_or(part);
                if part.starts_with("arn:") {
                    self.check_reference(&format!("awskms:{part}"))?;
                }
            }
        }
        Ok(())
    }

    /// Checks a key service as it describes its KEKs (`init`, `key create`, `rotate rewrap
    /// --to`): each KEK's reference, holders, and token serial.
    pub fn check_described(&self, url: &str, keks: &[KekInfo]) -> Result<()> {
        self.check_kind(url)?;
        if kind_of(url) == "quorum" {
            if let Some(q) = keks.first() {
                self.check_holders(&q.reference)?;
            }
        }
        for k in keks {
            // A quorum describes its holders' KEKs as `<holder>: <reference>`.
            let reference = k
                .reference
                .split_once(": ")
                .map_or(k.reference.as_str(), |(_, r)| r);
            self.check_reference(reference)?;
            if let (false, Some(found)) =
                (self.pkcs11.data_key_sha256.is_empty(), &k.public_key_sha256)
            {
                if !self.pkcs11.data_key_sha256.contains(found) {
                    return Err(Self::refuse(
                        reference,
                        format!(
                            "data key sha256 {found} (pinned: {})",
                            self.pkcs11.data_key_sha256.join(", ")
                        ),
                    ));
                }
            }
            if !self.pkcs11.token_serials.is_empty() && kind_of(reference) == "pkcs11" {
                match &k.token_serial {
                    Some(s) if self.pkcs11.token_serials.iter().any(|t| t == s) => {}
                    found => {
                        return Err(Self::refuse(
                            reference,
                            format!(
                                "token serial {} (allowed: {})",
                                found.as_deref().unwrap_or("unknown"),
                                self.pkcs11.token_serials.join(", ")
                            ),
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us_only() -> KeyPolicy {
        KeyPolicy::parse(
            br#"{"format":1,"services":["awskms","quorum"],
                 "awskms":{"regions":["us-east-1","us-west-2","us-gov-west-1"]},
                 "quorum":{"holders":["alice","bob"]}}"#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn regions_accounts_and_kinds() {
        let p = us_only();
        p.check_reference("awskms:arn:aws:kms:us-east-1:111122223333:key/k")
            .unwrap();
        p.check_reference("awskms:arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k")
            .unwrap();
        for bad in [
            "awskms:arn:aws:kms:eu-west-1:111122223333:key/k",
            "awskms:alias/custody",
            "local:0123",
            "pkcs11:object=x-data",
        ] {
            let e = p.check_reference(bad).unwrap_err();
            assert!(
                e.is_key_service() && e.to_string().contains("key policy"),
                "{e}"
            );
        }
        assert!(p.check_holders("quorum:2-of-2:alice,bob").is_ok());
        assert!(p.check_holders("quorum:2-of-3:alice,bob,mallory").is_err());
    }

    #[test]
    fn fail_unknown_fields_and_services_are_refused() {
        assert!(KeyPolicy::parse(br#"{"format":1,"regions":["x"]}"#, "t").is_err());
        assert!(KeyPolicy::parse(br#"{"format":1,"services":["gcpkms"]}"#, "t").is_err());
        assert!(KeyPolicy::parse(br#"{"format":2}"#, "t").is_err());
    }
}
