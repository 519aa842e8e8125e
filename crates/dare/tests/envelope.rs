//! The `salt | DARE stream` passphrase envelope of MinIO's ncrypt.

mod common;

use std::io::{Read, Write};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tusk_dare::envelope::{self, SALT_SIZE};
use tusk_dare::{CipherSuite, DareError, DecryptReader, Key, encrypted_size};

const PASSPHRASE: &[u8] = b"tusk backup passphrase";

fn seal(plaintext: &[u8]) -> Vec<u8> {
    let mut writer = envelope::encrypt_writer(Vec::new(), PASSPHRASE).unwrap();
    writer.write_all(plaintext).unwrap();
    writer.finish().unwrap()
}

#[test]
fn round_trip_and_layout() {
    let plaintext = plaintext(FULL + 99);
    let sealed = seal(&plaintext);
    assert_eq!(
        sealed.len() as u64,
        SALT_SIZE as u64 + encrypted_size(plaintext.len() as u64)
    );
    assert_eq!(
        sealed[SALT_SIZE], 0x20,
        "the DARE stream starts right after the salt"
    );
    assert_eq!(sealed[SALT_SIZE + 1], CipherSuite::preferred().id());

    let mut reader = envelope::decrypt_reader(sealed.as_slice(), PASSPHRASE).unwrap();
    let mut decrypted = Vec::new();
    reader.read_to_end(&mut decrypted).unwrap();
    assert_eq!(decrypted, plaintext);

    // The key is scrypt(passphrase, salt) exactly, so a plain DARE reader with it works too.
    let salt: [u8; SALT_SIZE] = sealed[..SALT_SIZE].try_into().unwrap();
    let key = Key::derive_from_passphrase(PASSPHRASE, &salt);
    let mut decrypted = Vec::new();
    DecryptReader::new(&sealed[SALT_SIZE..], &key)
        .read_to_end(&mut decrypted)
        .unwrap();
    assert_eq!(decrypted, plaintext);
}

#[test]
fn wrong_passphrase_fails_authentication() {
    let sealed = seal(b"secret data");
    let reader = envelope::decrypt_reader(sealed.as_slice(), b"not the passphrase").unwrap();
    let (released, err) = read_all(reader);
    let err = err.expect("wrong passphrase is detected");
    assert_eq!(
        DareError::from_io(&err),
        Some(&DareError::TagMismatch { package: 0 })
    );
    assert!(released.is_empty());
}

#[test]
fn every_object_gets_a_fresh_salt_and_nonce() {
    let first = seal(b"same plaintext");
    let second = seal(b"same plaintext");
    assert_ne!(first[..SALT_SIZE], second[..SALT_SIZE]);
    assert_ne!(first[SALT_SIZE + 4..], second[SALT_SIZE + 4..]);
}

#[test]
fn input_shorter_than_the_salt_is_rejected() {
    let err = envelope::decrypt_reader(&[0u8; SALT_SIZE - 1][..], PASSPHRASE)
        .err()
        .expect("short input is rejected");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(DareError::from_io(&err), Some(&DareError::MissingSalt));
}

#[test]
fn salt_without_stream_is_truncated() {
    let sealed = seal(b"");
    assert_eq!(sealed.len(), SALT_SIZE);
    let (_, err) = read_all(envelope::decrypt_reader(sealed.as_slice(), PASSPHRASE).unwrap());
    let err = err.expect("an empty stream is not accepted by default");
    assert_eq!(DareError::from_io(&err), Some(&DareError::Truncated));
}

#[tokio::test]
async fn async_envelope_round_trip_interoperates_with_std() {
    let plaintext = plaintext(2 * FULL);
    let mut writer = envelope::async_encrypt_writer(Vec::new(), PASSPHRASE)
        .await
        .unwrap();
    writer.write_all(&plaintext).await.unwrap();
    writer.shutdown().await.unwrap();
    let sealed = writer.into_inner();

    let mut decrypted = Vec::new();
    envelope::decrypt_reader(sealed.as_slice(), PASSPHRASE)
        .unwrap()
        .read_to_end(&mut decrypted)
        .unwrap();
    assert_eq!(decrypted, plaintext);

    let std_sealed = seal(&plaintext);
    let mut reader = envelope::async_decrypt_reader(std_sealed.as_slice(), PASSPHRASE)
        .await
        .unwrap();
    let mut decrypted = Vec::new();
    reader.read_to_end(&mut decrypted).await.unwrap();
    assert_eq!(decrypted, plaintext);

    let mut reader = envelope::async_decrypt_reader(std_sealed.as_slice(), b"wrong")
        .await
        .unwrap();
    let err = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert_eq!(
        DareError::from_io(&err),
        Some(&DareError::TagMismatch { package: 0 })
    );
}
