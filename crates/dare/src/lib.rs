//! DARE 2.0 stream encryption (the format of MinIO's `sio` package) and the passphrase envelope of
//! MinIO's `ncrypt` tool.
//!
//! A DARE 2.0 stream cuts the plaintext into payloads of 64 KiB and seals each one as a package
//! `header(16) | ciphertext | tag(16)` with AES-256-GCM or ChaCha20-Poly1305. The format is
//! described byte by byte in the repository's `docs/backup-format.md`; [`package`] holds the
//! constants.
//!
//! - [`EncryptWriter`] / [`DecryptReader`] wrap `std::io` streams,
//! - [`AsyncEncryptWriter`] / [`AsyncDecryptReader`] wrap tokio streams,
//! - [`split`] takes a stream apart into packages that several threads can open,
//! - [`envelope`] adds the `salt | DARE stream` framing with a scrypt-derived key,
//! - [`kdf`] computes that scrypt in 16 MiB instead of 64.
//!
//! Every adapter holds exactly one package in memory. A reader releases a package's plaintext only
//! after its tag verified, and reports the end of the stream only after it has seen the final
//! package and made sure nothing follows it. Malformed or forged input surfaces as an
//! [`std::io::Error`] of kind `InvalidData` wrapping a [`DareError`]; use [`DareError::from_io`]
//! to get it back.
//!
//! # Empty plaintext
//!
//! Like `sio`, the encoder turns an empty plaintext into an empty stream (zero packages, zero
//! bytes, as [`encrypted_size`]`(0)` says): a package can never carry an empty payload. An empty
//! stream carries no tag, so it cannot be told apart from a stream cut off before its first
//! package. The readers therefore reject it as [`DareError::Truncated`] unless the caller opts in
//! with [`DecryptReader::allow_empty`] (this is what `sio`'s version-detecting reader, and hence
//! `ncrypt -d`, does). Tusk's own streams are never empty: gzip output always has a header.

mod decrypt;
mod encrypt;
pub mod envelope;
mod error;
pub mod kdf;
mod key;
pub mod package;
pub mod split;

pub use decrypt::{AsyncDecryptReader, DecryptReader};
pub use encrypt::{AsyncEncryptWriter, EncryptWriter};
pub use error::DareError;
pub use key::{CipherSuite, Key};

/// Size in bytes of the DARE 2.0 stream that encrypts `plaintext_len` bytes:
/// `(n / 65536) * 65568 + (n % 65536 > 0 ? n % 65536 + 32 : 0)`.
///
/// Saturates at `u64::MAX` for lengths far beyond the 2^48-byte limit of a stream.
pub fn encrypted_size(plaintext_len: u64) -> u64 {
    let payload = package::MAX_PAYLOAD_SIZE as u64;
    let overhead = (package::HEADER_SIZE + package::TAG_SIZE) as u64;
    let full_packages = (plaintext_len / payload).saturating_mul(payload + overhead);
    let rest = plaintext_len % payload;
    let last_package = if rest > 0 { rest + overhead } else { 0 };
    full_packages.saturating_add(last_package)
}
