//! Finding and making key objects on a token: exactly one object per label, the public key's
//! fingerprint, and templates that fix a key once it is made.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use ring::digest;

use super::map_ck;
use crate::error::{Error, Result};

/// The one object of `class` labelled `label`. Two or more are refused: whoever can log in to
/// the token could add a key under custody's label (say a public key whose private half they
/// hold), and taking the first match would let them choose the key.
pub(super) fn find(s: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>> {
    let found = s
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| map_ck(label, "find key", e))?;
    match found[..] {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(Error::KeyDenied {
            key: label.to_string(),
            operation: "find key".into(),
            reason: format!(
                "{} objects on the token carry this label: someone added a key under custody's \
                 name; remove the one `key create` did not make",
                found.len()
            ),
        }),
    }
}

/// SHA-256 (hex) of a public key's modulus, then exponent: what `data-key-sha256` pins.
pub(super) fn public_key_sha256(
    s: &Session,
    h: ObjectHandle,
) -> std::result::Result<String, CkError> {
    let attrs = s.get_attributes(h, &[AttributeType::Modulus, AttributeType::PublicExponent])?;
    let (mut m, mut x) = (Vec::new(), Vec::new());
    for a in attrs {
        match a {
            Attribute::Modulus(v) => m = v,
            Attribute::PublicExponent(v) => x = v,
            _ => {}
        }
    }
    Ok(hex::encode(digest::digest(
        &digest::SHA256,
        &[m, x].concat(),
    )))
}

/// A key template with the attributes that fix the key once made: not modifiable (no one
/// turns on `CKA_EXTRACTABLE`, `CKA_WRAP` or another use later) and not destroyable. Tokens
/// that do not know these attributes get the template without them (see [`generate`]).
pub(super) fn hardened(template: &[Attribute]) -> Vec<Attribute> {
    let mut t = template.to_vec();
    t.extend([Attribute::Modifiable(false), Attribute::Destroyable(false)]);
    t
}

/// Whether a token refused a template for an attribute it does not support.
pub(super) fn refused_template(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::AttributeTypeInvalid
                | RvError::AttributeValueInvalid
                | RvError::TemplateInconsistent
                | RvError::AttributeReadOnly,
            _
        )
    )
}

/// Runs `make` with the hardened template, then with the plain one if the token refuses it.
pub(super) fn generate<T>(
    template: &[Attribute],
    make: impl Fn(&[Attribute]) -> std::result::Result<T, CkError>,
) -> std::result::Result<T, CkError> {
    match make(&hardened(template)) {
        Err(e) if refused_template(&e) => {
            tracing::warn!("the token refuses CKA_MODIFIABLE/CKA_DESTROYABLE false: keys are made without them");
            make(template)
        }
        r => r,
    }
}

/// Refuses a data public key that is not one the repository's key policy pins (none pinned:
/// any). Nothing is wrapped with a key someone put on the token after `init`.
pub(super) fn check_pins(s: &Session, h: ObjectHandle, pins: &[String], kref: &str) -> Result<()> {
    if pins.is_empty() {
        return Ok(());
    }
    let found = public_key_sha256(s, h).map_err(|e| super::map_ck(kref, "read public key", e))?;
    if pins.contains(&found) {
        return Ok(());
    }
    Err(Error::KeyDenied {
        key: kref.to_string(),
        operation: "wrap".into(),
        reason: format!(
            "the data key's public half on the token (sha256 {found}) is not the one the \
             repository's key policy pins ({}): someone replaced it; nothing was wrapped",
            pins.join(", ")
        ),
    })
}
