//! Format test vectors (`tests/vectors/blob-v1.json`): the device path (a fixed key imported
//! into the test token as a session object, driven through the same function the service uses)
//! and an independent software AES-GCM both produce the expected bytes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use serde::Deserialize;

use custodian::backend::pkcs11::encrypt::{gcm_open, gcm_seal_with_iv};
use custodian::backend::pkcs11::error::{classify, Class};
use custodian::domain::{Algorithm, KeyId, KeyVersion};
use custodian::format::blob::Header;
use custodian::format::{Blob, EncryptionContext};

use crate::common::inproc;

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    key_hex: String,
    iv_hex: String,
    key_id: String,
    key_version: u32,
    context: EncryptionContext,
    plaintext_hex: String,
    aad_hex: String,
    blob_hex: String,
}

fn load() -> Vec<Vector> {
    let text = include_str!("../vectors/blob-v1.json");
    let file: File = serde_json::from_str(text).expect("vector file parses");
    assert!(file.vectors.len() >= 3);
    file.vectors
}

fn header(v: &Vector) -> Header {
    Header {
        algorithm: Algorithm::Aes256GcmDevice,
        key_id: v.key_id.parse::<KeyId>().unwrap(),
        key_version: KeyVersion::new(v.key_version).unwrap(),
    }
}

#[test]
fn vectors_parse_and_serialise_to_the_expected_bytes() {
    for v in load() {
        let blob_bytes = hex::decode(&v.blob_hex).unwrap();
        let blob = Blob::parse(&blob_bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(blob.header(), header(&v), "{}", v.name);
        assert_eq!(hex::encode(blob.iv), v.iv_hex, "{}", v.name);
        assert_eq!(blob.to_bytes(), blob_bytes, "{}", v.name);
        assert_eq!(
            hex::encode(header(&v).aad(&v.context)),
            v.aad_hex,
            "{}",
            v.name
        );
    }
}

#[test]
fn software_aes_gcm_agrees_with_the_vectors() {
    for v in load() {
        let cipher = Aes256Gcm::new_from_slice(&hex::decode(&v.key_hex).unwrap()).unwrap();
        let iv = hex::decode(&v.iv_hex).unwrap();
        let aad = hex::decode(&v.aad_hex).unwrap();
        let pt = hex::decode(&v.plaintext_hex).unwrap();
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &pt,
                    aad: &aad,
                },
            )
            .unwrap();
        let blob = hex::decode(&v.blob_hex).unwrap();
        assert_eq!(ct, blob[39..], "{}", v.name);
        // Its negative twin: one changed AAD bit fails.
        let mut bad_aad = aad.clone();
        bad_aad[0] ^= 1;
        assert!(cipher
            .decrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &ct,
                    aad: &bad_aad
                }
            )
            .is_err());
    }
}

#[test]
fn the_device_path_produces_the_vectors() {
    let hsm = inproc::lock();
    let session = hsm.session();
    for v in load() {
        let key = session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Value(hex::decode(&v.key_hex).unwrap()),
            ])
            .unwrap();
        let iv: [u8; 12] = hex::decode(&v.iv_hex).unwrap().try_into().unwrap();
        let aad = header(&v).aad(&v.context);
        let pt = hex::decode(&v.plaintext_hex).unwrap();
        let ct = gcm_seal_with_iv(&session, key, iv, &aad, &pt).unwrap();
        let blob = Blob {
            algorithm: Algorithm::Aes256GcmDevice,
            key_id: header(&v).key_id,
            key_version: header(&v).key_version,
            iv,
            ciphertext: ct.clone(),
        };
        assert_eq!(hex::encode(blob.to_bytes()), v.blob_hex, "{}", v.name);
        assert_eq!(
            &gcm_open(&session, key, iv, &aad, &ct).unwrap()[..],
            &pt[..],
            "{}",
            v.name
        );

        // Negative twins on the device: a changed tag, a changed context, a wrong IV.
        let mut bad = ct.clone();
        *bad.last_mut().unwrap() ^= 0x40;
        let err = gcm_open(&session, key, iv, &aad, &bad).expect_err("tampered tag opened");
        if let custodian::backend::pkcs11::encrypt::GcmError::Device(e) = &err {
            assert_ne!(
                classify(e),
                Class::Fatal,
                "a failed tag check must never look fatal: {e}"
            );
        }
        let mut other_ctx = v
            .context
            .pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<Vec<_>>();
        other_ctx.push(("extra".to_owned(), String::new()));
        let other = EncryptionContext::from_pairs(other_ctx).unwrap();
        assert!(
            gcm_open(&session, key, iv, &header(&v).aad(&other), &ct).is_err(),
            "{}",
            v.name
        );
        let mut iv2 = iv;
        iv2[0] ^= 1;
        assert!(
            gcm_open(&session, key, iv2, &aad, &ct).is_err(),
            "{}",
            v.name
        );
        session.destroy_object(key).unwrap();
    }
}
