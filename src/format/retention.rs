//! The retention record (`retention`, docs/FORMAT.md §21): the Object Lock mode and period
//! every object gets, and whether the server honours conditional writes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRecord {
    pub format: u32,
    pub mode: LockMode,
    /// 0: no Object Lock (the record then only says whether writes may be conditional).
    pub days: u32,
    /// `init` found that the server refuses a second write under `If-None-Match: *`.
    pub conditional_writes: bool,
    pub set: DateTime<Utc>,
}

impl RetentionRecord {
    pub fn settings(&self) -> LockSettings {
        LockSettings {
            mode: self.mode,
            days: self.days,
            conditional_writes: self.conditional_writes,
        }
    }
}

/// S3's two retention modes: under governance, whoever holds
/// `s3:BypassGovernanceRetention` can still delete a locked version; under compliance, no one
/// can until the date passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    pub fn parse(s: &str) -> crate::error::Result<LockMode> {
        match s.to_ascii_lowercase().as_str() {
            "governance" => Ok(LockMode::Governance),
            "compliance" => Ok(LockMode::Compliance),
            _ => Err(crate::error::Error::invalid(format!(
                "object lock mode {s:?}: expected governance or compliance"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }
}

/// What every later write asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSettings {
    pub mode: LockMode,
    pub days: u32,
    /// Write objects that must never change with `If-None-Match: *` (the server honours it).
    pub conditional_writes: bool,
}

impl LockSettings {
    /// The retain-until date of an object written now.
    pub fn until_from_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::days(i64::from(self.days))
    }
}
