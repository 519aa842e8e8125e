//! The bytes of a stream follow docs/backup-format.md: checked against the AEAD crates used directly.

mod common;

use common::*;
use tusk_dare::package::{HEADER_SIZE, MAX_PACKAGE_SIZE, TAG_SIZE};
use tusk_dare::{DareError, DecryptReader, encrypted_size};

const KEY_BYTES: [u8; 32] = [0x42; 32];

#[test]
fn written_packages_have_the_documented_layout() {
    let key = tusk_dare::Key::from_bytes(KEY_BYTES);
    let plaintext = plaintext(2 * FULL + 5);
    for suite in SUITES {
        let stream = encrypt(&key, suite, &plaintext);
        assert_eq!(stream.len() as u64, encrypted_size(plaintext.len() as u64));
        let ranges = package_ranges(&stream);
        assert_eq!(
            ranges.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [
                MAX_PACKAGE_SIZE,
                MAX_PACKAGE_SIZE,
                HEADER_SIZE + 5 + TAG_SIZE
            ]
        );
        let first_nonce = &stream[4..HEADER_SIZE];
        for (sequence, range) in ranges.iter().enumerate() {
            let package = &stream[range.clone()];
            let is_final = sequence == ranges.len() - 1;
            let payload_len = range.len() - HEADER_SIZE - TAG_SIZE;
            assert_eq!(package[0], 0x20, "version");
            assert_eq!(package[1], suite.id(), "cipher suite");
            assert_eq!(
                u16::from_le_bytes([package[2], package[3]]) as usize,
                payload_len - 1
            );
            assert_eq!(package[4] & 0x80 != 0, is_final, "final flag of {sequence}");
            assert_eq!(package[4] & 0x7F, first_nonce[0] & 0x7F);
            assert_eq!(&package[5..HEADER_SIZE], &first_nonce[1..], "same nonce");
            let opened = open_package(suite, &KEY_BYTES, sequence as u32, package)
                .unwrap_or_else(|| panic!("package {sequence} opens with its sequence number"));
            assert_eq!(
                opened,
                plaintext[sequence * FULL..sequence * FULL + payload_len]
            );
            // The sequence number is part of the nonce: the wrong one does not open it.
            assert!(open_package(suite, &KEY_BYTES, sequence as u32 + 1, package).is_none());
        }
    }
}

#[test]
fn exact_multiple_of_64k_ends_with_full_final_package() {
    let key = tusk_dare::Key::from_bytes(KEY_BYTES);
    for suite in SUITES {
        let stream = encrypt(&key, suite, &plaintext(2 * FULL));
        assert_eq!(stream.len(), 2 * MAX_PACKAGE_SIZE);
        assert_eq!(stream[4] & 0x80, 0);
        let last = &stream[MAX_PACKAGE_SIZE..];
        assert_eq!(last[2..4], [0xFF, 0xFF]);
        assert_eq!(last[4] & 0x80, 0x80);
    }
}

#[test]
fn stream_built_from_the_spec_decrypts() {
    let key = tusk_dare::Key::from_bytes(KEY_BYTES);
    let nonce = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0xF0, 0xE0, 0xD0];
    let plaintext = plaintext(2 * FULL + 300);
    for suite in SUITES {
        let mut stream = Vec::new();
        for (sequence, chunk) in plaintext.chunks(FULL).enumerate() {
            let is_final = sequence == 2;
            stream.extend(seal_package(
                &KEY_BYTES,
                suite,
                nonce,
                sequence as u32,
                chunk,
                is_final,
            ));
        }
        let (released, err) = decrypt_std(&key, &stream);
        assert_eq!(err, None);
        assert_eq!(released, plaintext);
    }
}

#[test]
fn encrypted_size_formula() {
    let package = MAX_PACKAGE_SIZE as u64;
    let cases = [
        (0, 0),
        (1, 33),
        (65535, 65535 + 32),
        (65536, package),
        (65537, package + 33),
        (3 * 65536, 3 * package),
        (1 << 48, (1 << 32) * package),
    ];
    for (plaintext_len, expected) in cases {
        assert_eq!(encrypted_size(plaintext_len), expected, "{plaintext_len}");
    }
    assert_eq!(encrypted_size(u64::MAX), u64::MAX);
}

#[test]
fn suite_is_recorded_per_stream_and_both_are_read() {
    let key = tusk_dare::Key::from_bytes(KEY_BYTES);
    for suite in SUITES {
        let stream = encrypt(&key, suite, b"hello");
        assert_eq!(stream[1], suite.id());
        let mut reader = DecryptReader::new(stream.as_slice(), &key);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut reader, &mut out).unwrap();
        assert_eq!(out, "hello");
    }
}

#[test]
fn first_package_may_not_switch_suite_later() {
    let key = tusk_dare::Key::from_bytes(KEY_BYTES);
    let nonce = [1; 12];
    let [aes, chacha] = SUITES;
    let stream = [
        seal_package(&KEY_BYTES, aes, nonce, 0, &plaintext(FULL), false),
        seal_package(&KEY_BYTES, chacha, nonce, 1, b"tail", true),
    ]
    .concat();
    let (released, err) = decrypt_std(&key, &stream);
    assert_eq!(err, Some(DareError::CipherSuiteChanged { package: 1 }));
    assert_eq!(released, plaintext(FULL));
}
