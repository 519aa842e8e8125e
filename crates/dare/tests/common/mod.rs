//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{self, Read, Write};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use tusk_dare::package::{HEADER_SIZE, MAX_PACKAGE_SIZE, MAX_PAYLOAD_SIZE};
use tusk_dare::{CipherSuite, DareError, DecryptReader, EncryptWriter, Key};

pub const SUITES: [CipherSuite; 2] = [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305];

pub fn test_key(seed: u8) -> Key {
    Key::from_bytes([seed; 32])
}

/// Deterministic plaintext that differs at every offset within a package.
pub fn plaintext(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 65536) as u8)
        .collect()
}

pub fn encrypt(key: &Key, suite: CipherSuite, plaintext: &[u8]) -> Vec<u8> {
    let mut writer = EncryptWriter::new(Vec::new(), key, suite).unwrap();
    writer.write_all(plaintext).unwrap();
    writer.finish().unwrap()
}

/// Reads `reader` to the end in small steps. Returns the plaintext it released and the error
/// it stopped with, if any.
pub fn read_all(mut reader: impl Read) -> (Vec<u8>, Option<io::Error>) {
    let mut released = Vec::new();
    let mut chunk = [0; 10_000];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => return (released, None),
            Ok(n) => released.extend_from_slice(&chunk[..n]),
            Err(err) => return (released, Some(err)),
        }
    }
}

/// Decrypts `stream` with the std reader and returns the released plaintext and the DARE error
/// it failed with.
pub fn decrypt_std(key: &Key, stream: &[u8]) -> (Vec<u8>, Option<DareError>) {
    let (released, err) = read_all(DecryptReader::new(stream, key));
    let dare_err = err.map(|err| {
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        *DareError::from_io(&err).unwrap_or_else(|| panic!("not a DARE error: {err}"))
    });
    (released, dare_err)
}

/// Same as [`decrypt_std`] through the tokio reader.
pub async fn decrypt_async(key: &Key, stream: &[u8]) -> (Vec<u8>, Option<DareError>) {
    use tokio::io::AsyncReadExt;
    let mut reader = tusk_dare::AsyncDecryptReader::new(stream, key);
    let mut released = Vec::new();
    let mut chunk = [0; 10_000];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => return (released, None),
            Ok(n) => released.extend_from_slice(&chunk[..n]),
            Err(err) => {
                let dare_err = *DareError::from_io(&err).expect("a DARE error");
                return (released, Some(dare_err));
            }
        }
    }
}

/// Seals one package straight with the AEAD crates, following docs/backup-format.md rather than the crate.
pub fn seal_package(
    key_bytes: &[u8; 32],
    suite: CipherSuite,
    stream_nonce: [u8; 12],
    sequence: u32,
    payload: &[u8],
    is_final: bool,
) -> Vec<u8> {
    let mut header = [0u8; HEADER_SIZE];
    header[0] = 0x20;
    header[1] = suite.id();
    header[2..4].copy_from_slice(&((payload.len() - 1) as u16).to_le_bytes());
    header[4..].copy_from_slice(&stream_nonce);
    if is_final {
        header[4] |= 0x80;
    } else {
        header[4] &= 0x7F;
    }
    let nonce = aead_nonce(&header, sequence);
    let mut body = payload.to_vec();
    let tag: [u8; 16] = match suite {
        CipherSuite::Aes256Gcm => Aes256Gcm::new(key_bytes.into())
            .encrypt_inout_detached(&nonce.into(), &header[..4], body.as_mut_slice().into())
            .unwrap()
            .into(),
        CipherSuite::ChaCha20Poly1305 => ChaCha20Poly1305::new(key_bytes.into())
            .encrypt_inout_detached(&nonce.into(), &header[..4], body.as_mut_slice().into())
            .unwrap()
            .into(),
    };
    [&header[..], &body, &tag].concat()
}

/// Opens one package straight with the AEAD crates; `None` if the tag does not verify.
pub fn open_package(
    suite: CipherSuite,
    key_bytes: &[u8; 32],
    sequence: u32,
    package: &[u8],
) -> Option<Vec<u8>> {
    let header = &package[..HEADER_SIZE];
    let (body, tag) = package[HEADER_SIZE..].split_at(package.len() - HEADER_SIZE - 16);
    let tag: [u8; 16] = tag.try_into().unwrap();
    let nonce = aead_nonce(header, sequence);
    let mut body = body.to_vec();
    let ok = match suite {
        CipherSuite::Aes256Gcm => Aes256Gcm::new(key_bytes.into())
            .decrypt_inout_detached(
                &nonce.into(),
                &header[..4],
                body.as_mut_slice().into(),
                &tag.into(),
            )
            .is_ok(),
        CipherSuite::ChaCha20Poly1305 => ChaCha20Poly1305::new(key_bytes.into())
            .decrypt_inout_detached(
                &nonce.into(),
                &header[..4],
                body.as_mut_slice().into(),
                &tag.into(),
            )
            .is_ok(),
    };
    ok.then_some(body)
}

pub fn aead_nonce(header: &[u8], sequence: u32) -> [u8; 12] {
    let mut nonce: [u8; 12] = header[4..16].try_into().unwrap();
    let counter = u32::from_le_bytes(nonce[8..].try_into().unwrap()) ^ sequence;
    nonce[8..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

/// Byte ranges of the packages of a well-formed stream.
pub fn package_ranges(stream: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < stream.len() {
        let len = (stream.len() - start).min(MAX_PACKAGE_SIZE);
        ranges.push(start..start + len);
        start += len;
    }
    ranges
}

pub const FULL: usize = MAX_PAYLOAD_SIZE;
