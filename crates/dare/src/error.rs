use std::io;

/// Why a DARE stream could not be written or read.
///
/// None of the messages contain key material or plaintext. Package numbers count from 0 in
/// stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DareError {
    /// The tag of a package did not verify: the package was altered, moved to another position
    /// in the stream (its sequence number is part of the nonce), or the key is wrong.
    #[error("DARE package {package} failed authentication (altered, reordered, or wrong key)")]
    TagMismatch {
        /// Position of the package in the stream.
        package: u64,
    },
    /// A package's header nonce differs from the first package's: it was spliced in from
    /// another stream.
    #[error("DARE package {package} belongs to another stream (header nonce mismatch)")]
    NonceMismatch {
        /// Position of the package in the stream.
        package: u64,
    },
    /// The input ended before the final package: the stream was cut short (possibly exactly at
    /// a package boundary) or the writer never finished it.
    #[error("DARE stream ended before its final package (truncated)")]
    Truncated,
    /// Bytes follow the final package.
    #[error("unexpected data after the final DARE package")]
    TrailingData,
    /// A package header carries a version byte other than 0x20.
    #[error("unsupported DARE version byte {version:#04x} in package {package}")]
    UnknownVersion {
        /// The version byte found.
        version: u8,
        /// Position of the package in the stream.
        package: u64,
    },
    /// A package header names a cipher suite other than 0x00 (AES-256-GCM) or 0x01
    /// (ChaCha20-Poly1305).
    #[error("unknown DARE cipher suite {suite:#04x} in package {package}")]
    UnknownCipherSuite {
        /// The cipher suite byte found.
        suite: u8,
        /// Position of the package in the stream.
        package: u64,
    },
    /// A package uses a different cipher suite than the first package of the stream.
    #[error("DARE package {package} switches cipher suite mid-stream")]
    CipherSuiteChanged {
        /// Position of the package in the stream.
        package: u64,
    },
    /// A package that is not marked final carries less than 64 KiB of payload.
    #[error("non-final DARE package {package} has a short payload of {len} bytes")]
    ShortPayload {
        /// Position of the package in the stream.
        package: u64,
        /// Payload length announced by the header.
        len: usize,
    },
    /// The stream would need more than 2^32 packages, so sequence numbers would repeat.
    #[error("DARE stream exceeds 2^32 packages")]
    TooManyPackages,
    /// The passphrase envelope ended inside its header (the 32-byte salt of version 1, or the
    /// magic, salt and nonce of version 2).
    #[error("encrypted file ended within its envelope header (salt)")]
    MissingSalt,
    /// Plaintext was written after the stream's final package was sealed.
    #[error("write to a DARE stream after it was finished")]
    WriteAfterFinish,
    /// The operating system's random number generator failed, so no nonce or salt could be drawn.
    #[error("no randomness for a DARE nonce or salt: {0}")]
    Random(getrandom::Error),
}

impl DareError {
    /// The [`DareError`] inside an I/O error returned by this crate's readers and writers, if the
    /// failure came from the DARE layer rather than the wrapped stream.
    pub fn from_io(err: &io::Error) -> Option<&DareError> {
        err.get_ref()?.downcast_ref::<DareError>()
    }
}

impl From<DareError> for io::Error {
    fn from(err: DareError) -> Self {
        let kind = match err {
            DareError::Random(_) => io::ErrorKind::Other,
            DareError::WriteAfterFinish => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}
