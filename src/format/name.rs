//! File names and link targets as bytes: UTF-8 ones serialize as JSON strings, others as
//! `{"hex": "..."}`, so every Unix name survives a round trip exactly.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RawName(pub Vec<u8>);

impl RawName {
    pub fn from_os(s: &OsStr) -> RawName {
        RawName(s.as_bytes().to_vec())
    }
    pub fn to_os(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }
    pub fn as_os(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
    /// For display in listings and messages.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Bytes { hex: String },
}

impl Serialize for RawName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => Repr::Text(t.to_string()),
            Err(_) => Repr::Bytes {
                hex: hex::encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawName, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(t) => RawName(t.into_bytes()),
            Repr::Bytes { hex } => RawName(hex::decode(hex).map_err(serde::de::Error::custom)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_and_raw_round_trip() {
        for n in [
            b"plain".to_vec(),
            "ünï😀".as_bytes().to_vec(),
            vec![0xff, b'a', 0x80],
        ] {
            let r = RawName(n);
            let j = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<RawName>(&j).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&RawName(vec![0xff])).unwrap(),
            r#"{"hex":"ff"}"#
        );
    }
}
