//! Every integration test in one binary: the shared helpers (`common`) compile once, and
//! `cargo test --test it <module>` runs one area. Each module drives the built `custody`
//! binary or the library's public codecs against real services on loopback.

mod common;

mod adversarial;
mod cache;
mod compression;
mod crypto_vectors;
mod deploy;
mod fidelity;
mod flaky;
mod garage;
mod gc;
mod heal;
mod history;
mod history_race;
mod hostile;
mod key_policy;
mod key_templates;
mod kms;
mod names;
mod object_lock;
mod pkcs11;
mod profiles;
mod prompt;
mod provenance;
mod quorum;
mod race;
mod reencrypt;
mod repair;
mod requests;
mod restore_options;
mod resume;
mod rotate;
mod roundtrip;
mod s3;
mod select;
mod store_conformance;
mod tag;
mod times;
mod vectors;
