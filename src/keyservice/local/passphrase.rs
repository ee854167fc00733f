//! Passphrase sealing of the keyring at rest (docs/FORMAT.md §11.1): argon2id turns the
//! passphrase into one key, and each KEK secret is sealed under it with AES-256-GCM, its own
//! nonce, and its KEK id as AAD (a sealed secret moved to another entry does not open). An
//! unsealed keyring stores its secrets plain and never comes here.

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::denied;
use super::keyring_file::Argon2Params;
use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::crypto::{random, Key32};
use crate::error::{Error, Result};

/// Reads a passphrase file: its contents without trailing `\r`/`\n` (docs/FORMAT.md §11.1).
pub fn read_passphrase_file(path: &std::path::Path) -> Result<SecretString> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))?;
    Ok(SecretString::from(
        s.trim_end_matches(['\n', '\r']).to_string(),
    ))
}

/// Parameters for a new sealing: argon2id with 64 MiB, 3 passes, 1 lane, a fresh 16-byte
/// salt (every export draws a new one).
pub(crate) fn new_params() -> Result<Argon2Params> {
    let mut salt = vec![0u8; 16];
    random::fill(&mut salt)?;
    Ok(Argon2Params {
        m_cost_kib: 65536,
        t_cost: 3,
        p_cost: 1,
        salt,
    })
}

/// The sealing key: argon2id (v0x13, 32 bytes) of the passphrase under the stored parameters.
pub(crate) fn derive_key(p: &Argon2Params, pass: &SecretString) -> Result<Key32> {
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::invalid(format!("keyring argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass.expose_secret().as_bytes(), &p.salt, &mut out[..])
        .map_err(|e| Error::invalid(format!("argon2id: {e}")))?;
    Ok(Key32::from_bytes(&mut out))
}

/// `nonce(12) || AES-256-GCM(secret)(32) || tag(16)` under `key`, AAD = the KEK id.
pub(crate) fn seal(key: &Key32, kek_id: &str, secret: &Key32) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    random::fill(&mut nonce)?;
    let mut buf = secret.expose().to_vec();
    let tag = aead::seal(key, &nonce, kek_id.as_bytes(), &mut buf);
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    buf.iter_mut().for_each(|b| *b = 0);
    Ok(out)
}

/// Opens what [`seal`] made. A tag that fails means the wrong passphrase: denied, naming `url`.
pub(crate) fn unseal(key: &Key32, kek_id: &str, sealed: &[u8], url: &str) -> Result<Key32> {
    let wrong_length = || Error::invalid("sealed keyring secret has the wrong length");
    if sealed.len() != NONCE_LEN + 32 + TAG_LEN {
        return Err(wrong_length());
    }
    let (nonce, rest) = sealed
        .split_first_chunk::<NONCE_LEN>()
        .ok_or_else(wrong_length)?;
    let mut buf = Zeroizing::new(rest.to_vec());
    aead::open(key, nonce, kek_id.as_bytes(), &mut buf[..])
        .map_err(|_| denied(url, "open keyring", "wrong passphrase"))?;
    Key32::from_slice(&buf[..32]).ok_or_else(wrong_length)
}
