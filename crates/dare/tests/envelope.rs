//! The passphrase envelopes: version 1 (`salt | DARE stream`, MinIO's ncrypt) and version 2
//! (`magic | salt | object nonce | DARE stream`, one scrypt per writer).

mod common;

use std::io::{Read, Write};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tusk_dare::envelope::{
    self, MAGIC, MasterKey, OBJECT_KEY_INFO, OBJECT_NONCE_SIZE, Opener, SALT_SIZE, V2_HEADER_SIZE,
};
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

    assert_eq!(open_with_passphrase(&sealed), plaintext);

    let std_sealed = seal(&plaintext);
    let mut reader = envelope::async_decrypt_reader(std_sealed.as_slice(), PASSPHRASE)
        .await
        .unwrap();
    let mut decrypted = Vec::new();
    reader.read_to_end(&mut decrypted).await.unwrap();
    assert_eq!(decrypted, plaintext);

    assert_async_wrong_passphrase_fails(&std_sealed).await;
}

/// The async one-shot reader refuses `sealed` under a wrong passphrase at the first package.
async fn assert_async_wrong_passphrase_fails(sealed: &[u8]) {
    let mut reader = envelope::async_decrypt_reader(sealed, b"wrong")
        .await
        .unwrap();
    let err = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert_eq!(
        DareError::from_io(&err),
        Some(&DareError::TagMismatch { package: 0 })
    );
}

/// Opens an object of either envelope version with [`PASSPHRASE`] and nothing else.
fn open_with_passphrase(sealed: &[u8]) -> Vec<u8> {
    let mut decrypted = Vec::new();
    envelope::decrypt_reader(sealed, PASSPHRASE)
        .unwrap()
        .read_to_end(&mut decrypted)
        .unwrap();
    decrypted
}

fn seal_v2(master: &MasterKey, plaintext: &[u8]) -> Vec<u8> {
    let mut writer = master.encrypt_writer(Vec::new()).unwrap();
    writer.write_all(plaintext).unwrap();
    writer.finish().unwrap()
}

#[test]
fn v2_round_trip_and_layout_open_with_the_passphrase_alone() {
    let master = MasterKey::generate(PASSPHRASE).unwrap();
    let plaintext = plaintext(3 * FULL + 7);
    let sealed = seal_v2(&master, &plaintext);
    assert_eq!(
        sealed.len() as u64,
        V2_HEADER_SIZE as u64 + encrypted_size(plaintext.len() as u64)
    );
    assert_eq!(sealed[..16], MAGIC);
    assert_eq!(&sealed[16..16 + SALT_SIZE], master.salt());
    assert_eq!(
        sealed[V2_HEADER_SIZE], 0x20,
        "the DARE stream follows the header"
    );

    // The passphrase alone opens it, through the one-shot reader...
    assert_eq!(open_with_passphrase(&sealed), plaintext);

    // ...and through the documented derivation, rebuilt here from scrypt and HKDF directly.
    let salt = &sealed[16..16 + SALT_SIZE];
    let nonce = &sealed[16 + SALT_SIZE..V2_HEADER_SIZE];
    let mut master_bytes = [0; 32];
    scrypt::scrypt(
        PASSPHRASE,
        salt,
        &scrypt::Params::new(15, 16, 1).unwrap(),
        &mut master_bytes,
    )
    .unwrap();
    let mut object_key = [0; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(nonce), &master_bytes)
        .expand(OBJECT_KEY_INFO, &mut object_key)
        .unwrap();
    let mut decrypted = Vec::new();
    DecryptReader::new(&sealed[V2_HEADER_SIZE..], &Key::from_bytes(object_key))
        .read_to_end(&mut decrypted)
        .unwrap();
    assert_eq!(decrypted, plaintext);
}

#[test]
fn v2_objects_of_one_master_share_the_salt_but_not_the_key() {
    let master = MasterKey::generate(PASSPHRASE).unwrap();
    let first = seal_v2(&master, b"same plaintext");
    let second = seal_v2(&master, b"same plaintext");
    assert_eq!(first[..16 + SALT_SIZE], second[..16 + SALT_SIZE]);
    assert_ne!(
        first[16 + SALT_SIZE..V2_HEADER_SIZE],
        second[16 + SALT_SIZE..V2_HEADER_SIZE]
    );
    assert_ne!(first[V2_HEADER_SIZE + 16..], second[V2_HEADER_SIZE + 16..]);
    // A fresh master has a fresh salt.
    let other = seal_v2(&MasterKey::generate(PASSPHRASE).unwrap(), b"same plaintext");
    assert_ne!(first[16..16 + SALT_SIZE], other[16..16 + SALT_SIZE]);
}

#[test]
fn v2_wrong_passphrase_fails_authentication() {
    let sealed = seal_v2(&MasterKey::generate(PASSPHRASE).unwrap(), b"secret data");
    let (released, err) = read_all(envelope::decrypt_reader(sealed.as_slice(), b"wrong").unwrap());
    assert_eq!(
        DareError::from_io(&err.expect("wrong passphrase is detected")),
        Some(&DareError::TagMismatch { package: 0 })
    );
    assert!(released.is_empty());
}

#[test]
fn v2_tampered_header_is_refused_without_releasing_plaintext() {
    let master = MasterKey::generate(PASSPHRASE).unwrap();
    let sealed = seal_v2(&master, &plaintext(FULL + 5));
    // A byte of the magic (the object then reads as version 1), of the salt, of the nonce.
    for (what, index) in [
        ("magic", 3),
        ("salt", 16 + 5),
        ("nonce", 16 + SALT_SIZE + 31),
    ] {
        let mut tampered = sealed.clone();
        tampered[index] ^= 0x01;
        let opener = Opener::new(PASSPHRASE);
        let (released, err) = match opener.decrypt_reader(tampered.as_slice()) {
            Ok(reader) => read_all(reader),
            Err(err) => (Vec::new(), Some(err)),
        };
        let err = err.unwrap_or_else(|| panic!("a tampered {what} was accepted"));
        assert!(DareError::from_io(&err).is_some(), "tampered {what}: {err}");
        assert!(released.is_empty(), "tampered {what} released plaintext");
    }
    // Salt and nonce feed the key, so the first package's tag fails.
    let mut tampered = sealed.clone();
    tampered[16 + SALT_SIZE] ^= 0x80;
    let (_, err) = read_all(envelope::decrypt_reader(tampered.as_slice(), PASSPHRASE).unwrap());
    assert_eq!(
        DareError::from_io(&err.unwrap()),
        Some(&DareError::TagMismatch { package: 0 })
    );
}

#[test]
fn v2_header_cut_short_is_missing_its_salt() {
    let sealed = seal_v2(&MasterKey::generate(PASSPHRASE).unwrap(), b"data");
    for len in [16, 16 + SALT_SIZE, V2_HEADER_SIZE - 1] {
        let err = envelope::decrypt_reader(&sealed[..len], PASSPHRASE)
            .err()
            .unwrap_or_else(|| panic!("a {len}-byte header was accepted"));
        assert_eq!(DareError::from_io(&err), Some(&DareError::MissingSalt));
    }
    let (_, err) =
        read_all(envelope::decrypt_reader(&sealed[..V2_HEADER_SIZE], PASSPHRASE).unwrap());
    assert_eq!(
        DareError::from_io(&err.unwrap()),
        Some(&DareError::Truncated)
    );
}

#[test]
fn one_opener_reads_both_versions() {
    let master = MasterKey::generate(PASSPHRASE).unwrap();
    let opener = Opener::new(PASSPHRASE);
    for (version, sealed) in [
        ("v1", seal(b"old object")),
        ("v2", seal_v2(&master, b"new object")),
        ("v1 again", seal(b"old object")),
    ] {
        let mut decrypted = Vec::new();
        opener
            .decrypt_reader(sealed.as_slice())
            .unwrap()
            .read_to_end(&mut decrypted)
            .unwrap_or_else(|err| panic!("{version}: {err}"));
        assert!(decrypted.ends_with(b" object"), "{version}");
    }
    assert_eq!(OBJECT_NONCE_SIZE, 32);
}

#[tokio::test]
async fn async_opener_reads_v2() {
    let master = MasterKey::generate(PASSPHRASE).unwrap();
    let plaintext = plaintext(FULL * 2 + 1);
    let sealed = seal_v2(&master, &plaintext);
    let opener = Opener::new(PASSPHRASE);
    for _ in 0..2 {
        let mut decrypted = Vec::new();
        opener
            .async_decrypt_reader(sealed.as_slice())
            .await
            .unwrap()
            .read_to_end(&mut decrypted)
            .await
            .unwrap();
        assert_eq!(decrypted, plaintext);
    }
    assert_async_wrong_passphrase_fails(&sealed).await;
}
