//! Every defect docs/backup-format.md lists is refused with its own error, and no plaintext of an
//! unauthenticated package is ever released.

mod common;

use std::io::Write;

use common::*;
use tusk_dare::package::{HEADER_SIZE, MAX_PACKAGE_SIZE};
use tusk_dare::{CipherSuite, DareError, DecryptReader, EncryptWriter, Key};

/// Two full packages and a short final one.
fn three_package_stream(key: &Key, suite: CipherSuite) -> (Vec<u8>, Vec<u8>) {
    let plaintext = plaintext(2 * FULL + 1000);
    let stream = encrypt(key, suite, &plaintext);
    (plaintext, stream)
}

#[test]
fn any_flipped_byte_is_rejected_before_its_package_is_released() {
    let key = test_key(1);
    for suite in SUITES {
        let (plaintext, stream) = three_package_stream(&key, suite);
        // Every header bit that matters (low bits, the final flag, the high length bits), the
        // edges of each payload, every tag byte, and a stride through the payloads.
        let mut flips: Vec<(usize, u8)> = Vec::new();
        for range in package_ranges(&stream) {
            for pos in range.start..range.start + HEADER_SIZE {
                flips.extend([(pos, 0x01), (pos, 0x80)]);
            }
            let payload_start = range.start + HEADER_SIZE;
            flips.extend((payload_start..payload_start + 8).map(|pos| (pos, 0x01)));
            flips.extend((range.end - 24..range.end).map(|pos| (pos, 0x01)));
            flips.extend(
                (range.start..range.end)
                    .step_by(8191)
                    .map(|pos| (pos, 0x10)),
            );
        }
        for (pos, mask) in flips {
            let mut tampered = stream.clone();
            tampered[pos] ^= mask;
            let (released, err) = decrypt_std(&key, &tampered);
            assert!(err.is_some(), "flip of {mask:#x} at {pos} went unnoticed");
            let package = pos / MAX_PACKAGE_SIZE;
            // Only the packages before the damaged one may have been released, and the final
            // package never before the stream is confirmed complete.
            assert_eq!(
                released,
                plaintext[..package * FULL],
                "flip {mask:#x} at {pos}"
            );
        }
    }
}

#[test]
fn flipped_payload_byte_is_a_tag_mismatch() {
    let key = test_key(1);
    for suite in SUITES {
        let (plaintext, mut stream) = three_package_stream(&key, suite);
        stream[MAX_PACKAGE_SIZE + HEADER_SIZE + 10] ^= 0x80;
        let (released, err) = decrypt_std(&key, &stream);
        assert_eq!(err, Some(DareError::TagMismatch { package: 1 }));
        assert_eq!(released, plaintext[..FULL]);
    }
}

#[test]
fn wrong_key_is_a_tag_mismatch_on_the_first_package() {
    for suite in SUITES {
        let (_, stream) = three_package_stream(&test_key(1), suite);
        let (released, err) = decrypt_std(&test_key(2), &stream);
        assert_eq!(err, Some(DareError::TagMismatch { package: 0 }));
        assert!(released.is_empty());
    }
}

#[test]
fn truncation_anywhere_is_rejected() {
    let key = test_key(3);
    let (plaintext, stream) = three_package_stream(&key, CipherSuite::Aes256Gcm);
    let boundaries = [0, MAX_PACKAGE_SIZE, 2 * MAX_PACKAGE_SIZE];
    let inside = [1, 15, 16, 17, 1000, MAX_PACKAGE_SIZE - 1, stream.len() - 1];
    for cut in boundaries.into_iter().chain(inside) {
        let (released, err) = decrypt_std(&key, &stream[..cut]);
        assert_eq!(err, Some(DareError::Truncated), "cut at {cut}");
        let complete_packages = cut / MAX_PACKAGE_SIZE;
        assert_eq!(
            released,
            plaintext[..complete_packages * FULL],
            "cut at {cut}"
        );
    }
}

#[test]
fn reordered_packages_are_rejected() {
    let key = test_key(4);
    for suite in SUITES {
        let (_, stream) = three_package_stream(&key, suite);
        let swapped = [
            &stream[MAX_PACKAGE_SIZE..2 * MAX_PACKAGE_SIZE],
            &stream[..MAX_PACKAGE_SIZE],
            &stream[2 * MAX_PACKAGE_SIZE..],
        ]
        .concat();
        let (released, err) = decrypt_std(&key, &swapped);
        assert_eq!(err, Some(DareError::TagMismatch { package: 0 }));
        assert!(released.is_empty());
    }
}

#[test]
fn package_spliced_from_another_stream_is_rejected() {
    // Same key, so only the nonce check tells the streams apart.
    let key = test_key(5);
    for suite in SUITES {
        let (plaintext, stream) = three_package_stream(&key, suite);
        let (_, other) = three_package_stream(&key, suite);
        let spliced = [
            &stream[..MAX_PACKAGE_SIZE],
            &other[MAX_PACKAGE_SIZE..2 * MAX_PACKAGE_SIZE],
            &stream[2 * MAX_PACKAGE_SIZE..],
        ]
        .concat();
        let (released, err) = decrypt_std(&key, &spliced);
        assert_eq!(err, Some(DareError::NonceMismatch { package: 1 }));
        assert_eq!(released, plaintext[..FULL]);
    }
}

#[test]
fn bytes_after_the_final_package_are_rejected() {
    let key = test_key(6);
    let (plaintext, stream) = three_package_stream(&key, CipherSuite::ChaCha20Poly1305);
    let final_package = &stream[2 * MAX_PACKAGE_SIZE..];
    for trailer in [&[0u8][..], final_package] {
        let with_trailer = [&stream[..], trailer].concat();
        let (released, err) = decrypt_std(&key, &with_trailer);
        assert_eq!(err, Some(DareError::TrailingData));
        // The final package verified, but is held back until the input has ended.
        assert_eq!(released, plaintext[..2 * FULL]);
    }
}

#[test]
fn unknown_version_is_rejected() {
    let key = test_key(7);
    let (plaintext, mut stream) = three_package_stream(&key, CipherSuite::Aes256Gcm);
    stream[MAX_PACKAGE_SIZE] = 0x10;
    let (released, err) = decrypt_std(&key, &stream);
    assert_eq!(
        err,
        Some(DareError::UnknownVersion {
            version: 0x10,
            package: 1
        })
    );
    assert_eq!(released, plaintext[..FULL]);
}

#[test]
fn unknown_cipher_suite_is_rejected() {
    let key = test_key(8);
    let (_, mut stream) = three_package_stream(&key, CipherSuite::Aes256Gcm);
    stream[1] = 0x02;
    let (released, err) = decrypt_std(&key, &stream);
    assert_eq!(
        err,
        Some(DareError::UnknownCipherSuite {
            suite: 0x02,
            package: 0
        })
    );
    assert!(released.is_empty());
}

#[test]
fn short_non_final_payload_is_rejected() {
    // Authentic packages, so only the length rule can catch it.
    let key_bytes = [8u8; 32];
    let key = Key::from_bytes(key_bytes);
    for suite in SUITES {
        let nonce = [3; 12];
        let stream = [
            seal_package(&key_bytes, suite, nonce, 0, &plaintext(100), false),
            seal_package(&key_bytes, suite, nonce, 1, &plaintext(100), true),
        ]
        .concat();
        let (released, err) = decrypt_std(&key, &stream);
        assert_eq!(
            err,
            Some(DareError::ShortPayload {
                package: 0,
                len: 100
            })
        );
        assert!(released.is_empty());
    }
}

#[test]
fn empty_input_is_truncation_unless_allowed() {
    let key = test_key(9);
    for suite in SUITES {
        let stream = encrypt(&key, suite, b"");
        assert!(
            stream.is_empty(),
            "sio encodes empty plaintext as no packages"
        );
        let (_, err) = decrypt_std(&key, &stream);
        assert_eq!(err, Some(DareError::Truncated));
        let (released, err) = read_all(DecryptReader::new(&stream[..], &key).allow_empty());
        assert!(err.is_none());
        assert!(released.is_empty());
    }
}

#[test]
fn allow_empty_still_rejects_a_stream_cut_at_a_later_boundary() {
    let key = test_key(9);
    let (_, stream) = three_package_stream(&key, CipherSuite::Aes256Gcm);
    let cut = &stream[..MAX_PACKAGE_SIZE];
    let (_, err) = read_all(DecryptReader::new(cut, &key).allow_empty());
    let err = err.expect("cut stream is rejected");
    assert_eq!(DareError::from_io(&err), Some(&DareError::Truncated));
}

#[test]
fn writer_dropped_without_finish_never_yields_a_valid_stream() {
    let key = test_key(10);
    for len in [1, FULL, FULL + 1, 3 * FULL + 7] {
        let mut out = Vec::new();
        {
            let mut writer = EncryptWriter::new(&mut out, &key, CipherSuite::Aes256Gcm).unwrap();
            writer.write_all(&plaintext(len)).unwrap();
            writer.flush().unwrap();
        }
        let (_, err) = decrypt_std(&key, &out);
        assert_eq!(err, Some(DareError::Truncated), "{len} bytes");
    }
}

#[test]
fn errors_are_sticky() {
    let key = test_key(11);
    let (_, mut stream) = three_package_stream(&key, CipherSuite::Aes256Gcm);
    stream[20] ^= 1;
    let mut reader = DecryptReader::new(stream.as_slice(), &key);
    let mut buf = [0; 100];
    for _ in 0..3 {
        let err = std::io::Read::read(&mut reader, &mut buf).unwrap_err();
        assert_eq!(
            DareError::from_io(&err),
            Some(&DareError::TagMismatch { package: 0 })
        );
    }
}

#[tokio::test]
async fn async_reader_rejects_the_same_defects() {
    let key = test_key(12);
    let (plaintext, stream) = three_package_stream(&key, CipherSuite::ChaCha20Poly1305);

    let mut tampered = stream.clone();
    tampered[MAX_PACKAGE_SIZE + 100] ^= 4;
    let truncated = &stream[..2 * MAX_PACKAGE_SIZE];
    let trailing = [&stream[..], b"x"].concat();
    let (_, other) = three_package_stream(&key, CipherSuite::ChaCha20Poly1305);
    let spliced = [&stream[..MAX_PACKAGE_SIZE], &other[MAX_PACKAGE_SIZE..]].concat();

    let cases: [(&[u8], DareError, usize); 4] = [
        (&tampered, DareError::TagMismatch { package: 1 }, FULL),
        (truncated, DareError::Truncated, 2 * FULL),
        (&trailing, DareError::TrailingData, 2 * FULL),
        (&spliced, DareError::NonceMismatch { package: 1 }, FULL),
    ];
    for (input, expected, released_len) in cases {
        let (released, err) = decrypt_async(&key, input).await;
        assert_eq!(err, Some(expected));
        assert_eq!(released, plaintext[..released_len]);
    }
    let (released, err) = decrypt_async(&key, &stream).await;
    assert_eq!(err, None);
    assert_eq!(released, plaintext);
}
