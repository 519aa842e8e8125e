use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// scrypt cost parameter log2(N) of the passphrase envelope (N = 32768), as in MinIO's `ncrypt`.
pub const SCRYPT_LOG_N: u8 = 15;
/// scrypt block size parameter r of the passphrase envelope.
pub const SCRYPT_R: u32 = 16;
/// scrypt parallelism parameter p of the passphrase envelope.
pub const SCRYPT_P: u32 = 1;

/// A 256-bit DARE key.
///
/// The bytes are wiped when the key is dropped and never shown by `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl Key {
    /// Wraps raw key bytes. Each key must encrypt only one stream: the stream nonce is random,
    /// but DARE's security argument assumes a unique key per stream.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// Derives the key of the passphrase envelope:
    /// `scrypt(passphrase, salt, N = 32768, r = 16, p = 1, len = 32)`.
    ///
    /// scrypt alone would hold a 64 MiB table; [`crate::kdf::scrypt`] computes the same key
    /// with a 16 MiB one, for less than twice the CPU (a few tenths of a second): do it once
    /// per object, or once per master key.
    pub fn derive_from_passphrase(passphrase: &[u8], salt: &[u8; 32]) -> Self {
        let mut key = Key([0; 32]);
        // The parameters are constants that scrypt accepts and 32 bytes is a valid output
        // length, so this cannot fail.
        crate::kdf::scrypt(
            passphrase,
            salt,
            SCRYPT_LOG_N,
            SCRYPT_R,
            SCRYPT_P,
            &mut key.0,
        )
        .expect("the envelope's constant scrypt parameters are valid");
        key
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The AEAD that seals a DARE stream's packages; its id is header byte 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// AES-256-GCM, id 0x00.
    Aes256Gcm,
    /// ChaCha20-Poly1305, id 0x01.
    ChaCha20Poly1305,
}

impl CipherSuite {
    /// AES-256-GCM when this CPU has AES and carry-less multiplication instructions, otherwise
    /// ChaCha20-Poly1305, which is faster than AES in software and has no timing side channels.
    pub fn preferred() -> Self {
        if has_aes_instructions() {
            CipherSuite::Aes256Gcm
        } else {
            CipherSuite::ChaCha20Poly1305
        }
    }

    /// The suite's id in a package header.
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Aes256Gcm => 0x00,
            CipherSuite::ChaCha20Poly1305 => 0x01,
        }
    }

    /// The suite with header id `id`, if there is one.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x00 => Some(CipherSuite::Aes256Gcm),
            0x01 => Some(CipherSuite::ChaCha20Poly1305),
            _ => None,
        }
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn has_aes_instructions() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn has_aes_instructions() -> bool {
    // Rust's aarch64 "aes" feature covers both AES and PMULL.
    std::arch::is_aarch64_feature_detected!("aes")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
fn has_aes_instructions() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_key_matches_openssl_scrypt() {
        // From tests/kat/gen_kat.py: Python's hashlib.scrypt (OpenSSL) with N=32768, r=16, p=1.
        let mut salt = [0; 32];
        for (i, b) in salt.iter_mut().enumerate() {
            *b = 100 + i as u8;
        }
        let key = Key::derive_from_passphrase(b"correct horse battery staple", &salt);
        let expected = "72652561a499b4143a4fce9e8ad29d7f3359f2b5e327d45afd2786220e6ab403";
        let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn debug_does_not_show_key_bytes() {
        let key = Key::from_bytes([0xAB; 32]);
        let shown = format!("{key:?} {key:#?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn suite_ids_round_trip() {
        for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
            assert_eq!(CipherSuite::from_id(suite.id()), Some(suite));
        }
        assert_eq!(CipherSuite::from_id(0x02), None);
    }
}
