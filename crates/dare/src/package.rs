//! The DARE 2.0 package format and the per-package sealing and opening rules.
//!
//! A package is `header(16) | ciphertext(payload) | tag(16)`:
//!
//! | header bytes | meaning |
//! | --- | --- |
//! | 0 | version [`VERSION_20`] |
//! | 1 | cipher suite id ([`CipherSuite::id`]) |
//! | 2-3 | payload length − 1, little-endian u16 |
//! | 4-15 | the stream's random nonce; bit [`FINAL_FLAG`] of byte 4 marks the final package |
//!
//! The AEAD nonce is header bytes 4..16 with the last four XORed with the package's sequence
//! number (little-endian u32, from 0, not stored); the associated data is header bytes 0..4.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use subtle::ConstantTimeEq;

use crate::{CipherSuite, DareError, Key};

/// Version byte of DARE 2.0.
pub const VERSION_20: u8 = 0x20;
/// Size of a package header.
pub const HEADER_SIZE: usize = 16;
/// Size of a package's authentication tag.
pub const TAG_SIZE: usize = 16;
/// Size of every payload but the last.
pub const MAX_PAYLOAD_SIZE: usize = 1 << 16;
/// Size of a package with a full payload.
pub const MAX_PACKAGE_SIZE: usize = HEADER_SIZE + MAX_PAYLOAD_SIZE + TAG_SIZE;
/// Most packages one stream may have: sequence numbers are 32 bits wide.
pub const MAX_PACKAGES: u64 = 1 << 32;
/// Bit of header byte 4 that marks the final package.
pub const FINAL_FLAG: u8 = 0x80;

const NONCE_SIZE: usize = 12;

/// The fields of a package header that the reader acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackageHeader {
    pub(crate) payload_len: usize,
    pub(crate) is_final: bool,
}

fn write_header(
    header: &mut [u8],
    suite: CipherSuite,
    payload_len: usize,
    stream_nonce: &[u8; NONCE_SIZE],
    is_final: bool,
) {
    debug_assert!((1..=MAX_PAYLOAD_SIZE).contains(&payload_len));
    header[0] = VERSION_20;
    header[1] = suite.id();
    // The range check above makes this lossless: 1..=65536 maps onto 0..=65535.
    let encoded_len = (payload_len - 1) as u16;
    header[2..4].copy_from_slice(&encoded_len.to_le_bytes());
    header[4..HEADER_SIZE].copy_from_slice(stream_nonce);
    if is_final {
        header[4] |= FINAL_FLAG;
    } else {
        header[4] &= !FINAL_FLAG;
    }
}

fn header_payload_len(header: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([header[2], header[3]])) + 1
}

fn header_is_final(header: &[u8]) -> bool {
    header[4] & FINAL_FLAG != 0
}

/// The header nonce with the final flag cleared, which is the same in every package of a stream.
fn stream_nonce_of(header: &[u8]) -> [u8; NONCE_SIZE] {
    let mut nonce = [0; NONCE_SIZE];
    nonce.copy_from_slice(&header[4..HEADER_SIZE]);
    nonce[0] &= !FINAL_FLAG;
    nonce
}

fn aead_nonce(header: &[u8], sequence: u32) -> [u8; NONCE_SIZE] {
    let mut nonce = [0; NONCE_SIZE];
    nonce.copy_from_slice(&header[4..HEADER_SIZE]);
    let mut counter = [0; 4];
    counter.copy_from_slice(&nonce[8..]);
    let mixed = u32::from_le_bytes(counter) ^ sequence;
    nonce[8..].copy_from_slice(&mixed.to_le_bytes());
    nonce
}

pub(crate) enum PackageCipher {
    Aes256Gcm(Box<Aes256Gcm>),
    ChaCha20Poly1305(Box<ChaCha20Poly1305>),
}

impl PackageCipher {
    pub(crate) fn new(suite: CipherSuite, key: &Key) -> Self {
        let key = key.as_bytes().into();
        match suite {
            CipherSuite::Aes256Gcm => PackageCipher::Aes256Gcm(Box::new(Aes256Gcm::new(key))),
            CipherSuite::ChaCha20Poly1305 => {
                PackageCipher::ChaCha20Poly1305(Box::new(ChaCha20Poly1305::new(key)))
            }
        }
    }

    /// Encrypts `payload` in place and returns its tag.
    fn seal(&self, nonce: &[u8; NONCE_SIZE], aad: &[u8], payload: &mut [u8]) -> [u8; TAG_SIZE] {
        let nonce = nonce.into();
        // Both AEADs only refuse inputs of gigabytes; a payload is at most 64 KiB.
        let tag = match self {
            PackageCipher::Aes256Gcm(cipher) => {
                cipher.encrypt_inout_detached(nonce, aad, payload.into())
            }
            PackageCipher::ChaCha20Poly1305(cipher) => {
                cipher.encrypt_inout_detached(nonce, aad, payload.into())
            }
        }
        .expect("a DARE payload is far below the AEAD length limits");
        tag.into()
    }

    /// Verifies `tag` over `payload` and, only if it matches, decrypts `payload` in place.
    fn open(
        &self,
        nonce: &[u8; NONCE_SIZE],
        aad: &[u8],
        payload: &mut [u8],
        tag: &[u8; TAG_SIZE],
    ) -> bool {
        let nonce = nonce.into();
        let tag = tag.into();
        match self {
            PackageCipher::Aes256Gcm(cipher) => {
                cipher.decrypt_inout_detached(nonce, aad, payload.into(), tag)
            }
            PackageCipher::ChaCha20Poly1305(cipher) => {
                cipher.decrypt_inout_detached(nonce, aad, payload.into(), tag)
            }
        }
        .is_ok()
    }
}

fn sequence_number(package: u64) -> Result<u32, DareError> {
    u32::try_from(package).map_err(|_| DareError::TooManyPackages)
}

/// Seals the packages of one stream, in order.
pub(crate) struct Sealer {
    cipher: PackageCipher,
    suite: CipherSuite,
    stream_nonce: [u8; NONCE_SIZE],
    next_package: u64,
    sealed_final: bool,
}

impl Sealer {
    /// A sealer with a fresh random stream nonce.
    pub(crate) fn new(key: &Key, suite: CipherSuite) -> Result<Self, DareError> {
        let mut stream_nonce = [0; NONCE_SIZE];
        getrandom::fill(&mut stream_nonce).map_err(DareError::Random)?;
        Ok(Self::with_nonce(key, suite, stream_nonce))
    }

    pub(crate) fn with_nonce(
        key: &Key,
        suite: CipherSuite,
        stream_nonce: [u8; NONCE_SIZE],
    ) -> Self {
        Sealer {
            cipher: PackageCipher::new(suite, key),
            suite,
            stream_nonce,
            next_package: 0,
            sealed_final: false,
        }
    }

    /// Seals the `payload_len` (1..=64 KiB) plaintext bytes at `package[HEADER_SIZE..]` in place:
    /// writes the header before them and the tag after them. Returns the package's length.
    pub(crate) fn seal(
        &mut self,
        package: &mut [u8],
        payload_len: usize,
        is_final: bool,
    ) -> Result<usize, DareError> {
        if self.sealed_final {
            return Err(DareError::WriteAfterFinish);
        }
        let sequence = sequence_number(self.next_package)?;
        let (header, rest) = package.split_at_mut(HEADER_SIZE);
        let (payload, rest) = rest.split_at_mut(payload_len);
        write_header(
            header,
            self.suite,
            payload_len,
            &self.stream_nonce,
            is_final,
        );
        let tag = self
            .cipher
            .seal(&aead_nonce(header, sequence), &header[..4], payload);
        rest[..TAG_SIZE].copy_from_slice(&tag);
        self.next_package += 1;
        self.sealed_final = is_final;
        Ok(HEADER_SIZE + payload_len + TAG_SIZE)
    }

    #[cfg(test)]
    pub(crate) fn skip_to_package(&mut self, package: u64) {
        self.next_package = package;
    }
}

/// Verifies and decrypts in place the package at position `index` of its stream: the package's
/// bytes, `header | payload | tag`, with a header that passed [`Opener::check_header`]. Packages
/// are independent of each other (the position is part of the nonce), so this may run on any
/// thread, in any order.
pub(crate) fn open_package(
    cipher: &PackageCipher,
    index: u64,
    package: &mut [u8],
) -> Result<(), DareError> {
    let sequence = sequence_number(index)?;
    let (header, rest) = package.split_at_mut(HEADER_SIZE);
    let payload_len = rest.len() - TAG_SIZE;
    let (payload, tag) = rest.split_at_mut(payload_len);
    let mut tag_bytes = [0; TAG_SIZE];
    tag_bytes.copy_from_slice(tag);
    if cipher.open(
        &aead_nonce(header, sequence),
        &header[..4],
        payload,
        &tag_bytes,
    ) {
        Ok(())
    } else {
        Err(DareError::TagMismatch { package: index })
    }
}

/// Checks and opens the packages of one stream, in order.
pub(crate) struct Opener {
    key: Key,
    /// Cipher and nonce of the first package, which every later package must share.
    stream: Option<(CipherSuite, PackageCipher, [u8; NONCE_SIZE])>,
    next_package: u64,
}

impl Opener {
    pub(crate) fn new(key: &Key) -> Self {
        Opener {
            key: key.clone(),
            stream: None,
            next_package: 0,
        }
    }

    /// Number of packages opened so far.
    pub(crate) fn packages_opened(&self) -> u64 {
        self.next_package
    }

    /// Validates the header of the next package before its body is read.
    pub(crate) fn check_header(
        &mut self,
        header: &[u8; HEADER_SIZE],
    ) -> Result<PackageHeader, DareError> {
        let package = self.next_package;
        if header[0] != VERSION_20 {
            return Err(DareError::UnknownVersion {
                version: header[0],
                package,
            });
        }
        let suite = CipherSuite::from_id(header[1]).ok_or(DareError::UnknownCipherSuite {
            suite: header[1],
            package,
        })?;
        let payload_len = header_payload_len(header);
        let is_final = header_is_final(header);
        if !is_final && payload_len != MAX_PAYLOAD_SIZE {
            return Err(DareError::ShortPayload {
                package,
                len: payload_len,
            });
        }
        sequence_number(package)?;
        let stream_nonce = stream_nonce_of(header);
        match &self.stream {
            None => {
                let cipher = PackageCipher::new(suite, &self.key);
                self.stream = Some((suite, cipher, stream_nonce));
            }
            Some((first_suite, _, first_nonce)) => {
                if suite != *first_suite {
                    return Err(DareError::CipherSuiteChanged { package });
                }
                if !bool::from(stream_nonce.ct_eq(first_nonce)) {
                    return Err(DareError::NonceMismatch { package });
                }
            }
        }
        Ok(PackageHeader {
            payload_len,
            is_final,
        })
    }

    /// Verifies and decrypts in place the package in `package`, whose header passed
    /// [`Opener::check_header`] and whose length is the one that header announced.
    pub(crate) fn open(&mut self, package: &mut [u8]) -> Result<(), DareError> {
        let index = self.next_package;
        let Some((_, cipher, _)) = &self.stream else {
            // check_header always runs first; without a cipher nothing can be authenticated.
            return Err(DareError::TagMismatch { package: index });
        };
        open_package(cipher, index, package)?;
        self.next_package += 1;
        Ok(())
    }

    /// Counts the package whose header just passed [`Opener::check_header`] as taken, for a
    /// reader that opens it elsewhere (with [`open_package`], on another thread).
    pub(crate) fn hand_off(&mut self) {
        self.next_package += 1;
    }

    /// The cipher suite of the stream, once its first header was checked.
    pub(crate) fn suite(&self) -> Option<CipherSuite> {
        self.stream.as_ref().map(|(suite, _, _)| *suite)
    }

    /// The key the stream is opened with.
    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    #[cfg(test)]
    pub(crate) fn skip_to_package(&mut self, package: u64) {
        self.next_package = package;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::{DecryptReader, EncryptWriter};

    // Known answers from tests/kat/gen_kat.py, an independent encoder on OpenSSL's AEADs.
    const KAT_NONCE: [u8; NONCE_SIZE] = [
        0xC5, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB,
    ];
    const KAT_AES_20_BYTES: &str = "20001300c5a1a2a3a4a5a6a7a8a9aaab82d82024a7c57b044b106ddaaf3725\
                                    3ca1f776a834819e00f3e36aacc17c10abeb960dbf";
    const KAT_CHACHA_20_BYTES: &str = "20011300c5a1a2a3a4a5a6a7a8a9aaab7a0d4168277464d5a14393b1cc62\
                                       00a4f93bd5c78a88d347017eb93ce638438b016557b8";
    const KAT_AES_3_PACKAGES_SHA256: &str =
        "e01b696c6314e52950a97f8bf2c38fd88191f916f10fe376ce97272b6ba39f39";
    const KAT_CHACHA_3_PACKAGES_SHA256: &str =
        "1c9398ce6819bfb65be8c05c8b0086715a3db8dc653fe223395a5efbf193cf19";

    fn kat_key() -> Key {
        let mut bytes = [0; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        Key::from_bytes(bytes)
    }

    fn kat_plaintext(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn encrypt_with_nonce(suite: CipherSuite, plaintext: &[u8]) -> Vec<u8> {
        let sealer = Sealer::with_nonce(&kat_key(), suite, KAT_NONCE);
        let mut writer = EncryptWriter::with_sealer(Vec::new(), sealer);
        writer.write_all(plaintext).unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn single_package_matches_independent_encoder() {
        for (suite, expected) in [
            (CipherSuite::Aes256Gcm, KAT_AES_20_BYTES),
            (CipherSuite::ChaCha20Poly1305, KAT_CHACHA_20_BYTES),
        ] {
            let stream = encrypt_with_nonce(suite, &kat_plaintext(20));
            assert_eq!(hex(&stream), expected, "{suite:?}");
        }
    }

    #[test]
    fn three_packages_match_independent_encoder() {
        let plaintext = kat_plaintext(2 * MAX_PAYLOAD_SIZE + 5);
        for (suite, expected) in [
            (CipherSuite::Aes256Gcm, KAT_AES_3_PACKAGES_SHA256),
            (CipherSuite::ChaCha20Poly1305, KAT_CHACHA_3_PACKAGES_SHA256),
        ] {
            let stream = encrypt_with_nonce(suite, &plaintext);
            assert_eq!(stream.len(), 131173);
            assert_eq!(hex(&Sha256::digest(&stream)), expected, "{suite:?}");
        }
    }

    #[test]
    fn writer_refuses_package_beyond_sequence_space() {
        let mut sealer = Sealer::with_nonce(&kat_key(), CipherSuite::Aes256Gcm, KAT_NONCE);
        // Package 2^32 - 1 is the last one a stream may have.
        sealer.skip_to_package(MAX_PACKAGES - 1);
        let mut writer = EncryptWriter::with_sealer(Vec::new(), sealer);
        writer.write_all(&[7; MAX_PAYLOAD_SIZE + 1]).unwrap();
        writer.flush().unwrap();
        assert_eq!(writer.get_ref().len(), MAX_PACKAGE_SIZE);
        let err = writer.finish().unwrap_err();
        assert_eq!(DareError::from_io(&err), Some(&DareError::TooManyPackages));
    }

    #[test]
    fn last_package_of_sequence_space_opens_and_next_is_refused() {
        let key = kat_key();
        let mut sealer = Sealer::with_nonce(&key, CipherSuite::Aes256Gcm, KAT_NONCE);
        let mut stream = vec![0; 2 * MAX_PACKAGE_SIZE];
        sealer.skip_to_package(MAX_PACKAGES - 1);
        stream[HEADER_SIZE..HEADER_SIZE + MAX_PAYLOAD_SIZE].fill(1);
        sealer.seal(&mut stream, MAX_PAYLOAD_SIZE, false).unwrap();
        // Same nonce, and the tag would verify with sequence number 0 after wrapping: the
        // reader must stop at the sequence limit instead.
        sealer.skip_to_package(0);
        let second = &mut stream[MAX_PACKAGE_SIZE..];
        second[HEADER_SIZE..HEADER_SIZE + MAX_PAYLOAD_SIZE].fill(2);
        sealer.seal(second, MAX_PAYLOAD_SIZE, true).unwrap();

        let mut reader = DecryptReader::new(stream.as_slice(), &key);
        reader.opener_mut().skip_to_package(MAX_PACKAGES - 1);
        let mut plaintext = Vec::new();
        let err = reader.read_to_end(&mut plaintext).unwrap_err();
        assert_eq!(DareError::from_io(&err), Some(&DareError::TooManyPackages));
        assert_eq!(plaintext, vec![1; MAX_PAYLOAD_SIZE]);
    }

    #[test]
    fn header_flag_is_cleared_on_non_final_packages_even_if_nonce_has_it() {
        let mut header = [0; HEADER_SIZE];
        write_header(
            &mut header,
            CipherSuite::ChaCha20Poly1305,
            1,
            &KAT_NONCE,
            false,
        );
        assert_eq!(header[..5], [0x20, 0x01, 0x00, 0x00, 0x45]);
        write_header(
            &mut header,
            CipherSuite::Aes256Gcm,
            MAX_PAYLOAD_SIZE,
            &KAT_NONCE,
            true,
        );
        assert_eq!(header[..5], [0x20, 0x00, 0xFF, 0xFF, 0xC5]);
        assert_eq!(header[5..], KAT_NONCE[1..]);
    }

    #[test]
    fn aead_nonce_xors_sequence_into_last_four_bytes() {
        let mut header = [0; HEADER_SIZE];
        write_header(&mut header, CipherSuite::Aes256Gcm, 1, &KAT_NONCE, false);
        let nonce = aead_nonce(&header, 0x0102_0304);
        assert_eq!(nonce[..8], header[4..12]);
        assert_eq!(
            nonce[8..],
            [0xA8 ^ 0x04, 0xA9 ^ 0x03, 0xAA ^ 0x02, 0xAB ^ 0x01]
        );
    }
}
