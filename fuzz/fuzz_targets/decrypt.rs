//! Fuzzes the DARE decoder two ways, chosen by the first input byte:
//! - arbitrary bytes as a stream: never a panic, and never accepted, since no input can carry
//!   valid tags without the key;
//! - a genuine stream of fuzzer-chosen plaintext, then damaged (one flipped byte, a cut, or
//!   appended bytes): any damage is rejected, and the plaintext released before the error is
//!   a whole-package prefix of the original.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use tusk_dare::package::MAX_PAYLOAD_SIZE;
use tusk_dare::{CipherSuite, DareError, DecryptReader, EncryptWriter, Key};

fn key() -> Key {
    Key::from_bytes([0x3C; 32])
}

/// Reads everything with reads of `read_size` bytes; returns the released plaintext and the
/// DARE error, if the read failed.
fn decrypt(stream: &[u8], read_size: usize) -> (Vec<u8>, Option<DareError>) {
    let mut reader = DecryptReader::new(stream, &key());
    let mut released = Vec::new();
    let mut buf = vec![0; read_size.max(1)];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return (released, None),
            Ok(n) => released.extend_from_slice(&buf[..n]),
            Err(err) => {
                let dare = DareError::from_io(&err).copied();
                assert!(
                    dare.is_some(),
                    "reading a slice fails only with DARE errors"
                );
                return (released, dare);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(mode >> 1) * 613 + 1;
    if mode & 1 == 0 {
        let (released, err) = decrypt(rest, read_size);
        assert!(err.is_some(), "forged stream accepted");
        assert!(released.len() % MAX_PAYLOAD_SIZE == 0);
        return;
    }

    if rest.len() < 6 {
        return;
    }
    let (params, seed) = rest.split_at(6);
    let repeat = usize::from(params[0] % 48) + 1;
    let plaintext: Vec<u8> = seed
        .iter()
        .copied()
        .cycle()
        .take(seed.len() * repeat)
        .collect();
    let suite = if params[1] & 1 == 0 {
        CipherSuite::Aes256Gcm
    } else {
        CipherSuite::ChaCha20Poly1305
    };
    let mut writer = EncryptWriter::new(Vec::new(), &key(), suite).expect("random nonce");
    writer.write_all(&plaintext).expect("writing to a Vec");
    let mut stream = writer.finish().expect("writing to a Vec");

    let position =
        usize::from(u16::from_le_bytes([params[3], params[4]])) * 4 + usize::from(params[2]);
    let damaged = match params[1] >> 1 & 3 {
        0 => false,
        1 if !stream.is_empty() => {
            let at = position % stream.len();
            stream[at] ^= params[5] | 1;
            true
        }
        2 if !stream.is_empty() => {
            stream.truncate(position % stream.len());
            true
        }
        3 => {
            stream.extend_from_slice(&params[2..=usize::from(params[5] % 4) + 2]);
            true
        }
        _ => false,
    };

    let (released, err) = decrypt(&stream, read_size);
    if damaged {
        assert!(err.is_some(), "damaged stream accepted");
        assert!(released.len() % MAX_PAYLOAD_SIZE == 0);
        assert_eq!(released, plaintext[..released.len()]);
    } else if plaintext.is_empty() {
        assert_eq!(err, Some(DareError::Truncated));
    } else {
        assert_eq!(err, None);
        assert_eq!(released, plaintext);
    }
});
