//! A DARE 2.0 stream taken apart into packages that can be opened on several threads.
//!
//! Every package of a stream is sealed on its own: its nonce is the stream's nonce with the
//! package's position XORed in, so opening package *i* needs nothing from package *i − 1*. The
//! rules that tie packages into one stream (one nonce and one cipher suite throughout, full
//! payloads before the final package, nothing after it, no end without it) are checked in
//! stream order by [`PackageSplitter`], which costs no cryptography; the tags, which cost all of
//! it, are verified by [`PackageOpener`] wherever the caller runs it. A caller that hands out
//! plaintext in stream order, and only from packages that opened, gives the guarantees of
//! [`crate::DecryptReader`]: the stream is complete and authentic once the splitter reported
//! its end and every package opened.

use std::io::{self, Read};

use crate::package::{HEADER_SIZE, Opener, PackageCipher, TAG_SIZE, open_package};
use crate::{CipherSuite, DareError, Key};

/// One package of a stream, still sealed, with its position.
pub struct SealedPackage {
    index: u64,
    suite: CipherSuite,
    /// `header | sealed payload | tag`.
    bytes: Vec<u8>,
}

impl SealedPackage {
    /// The package's position in its stream, from 0.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Length of the plaintext the package carries.
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - HEADER_SIZE - TAG_SIZE
    }
}

/// Reads a DARE stream package by package, checking in order every rule that binds the packages
/// into one stream. Its end (`Ok(None)`) means the final package was read and nothing follows.
pub struct PackageSplitter<R> {
    inner: R,
    /// Checks headers in stream order; opens nothing.
    headers: Opener,
    allow_empty: bool,
    finished: bool,
}

impl<R: Read> PackageSplitter<R> {
    /// Splits the stream in `inner`, which is sealed under `key`.
    pub fn new(inner: R, key: &Key) -> Self {
        PackageSplitter {
            inner,
            headers: Opener::new(key),
            allow_empty: false,
            finished: false,
        }
    }

    pub(crate) fn with_empty_allowed(mut self, allow_empty: bool) -> Self {
        self.allow_empty = allow_empty;
        self
    }

    /// An opener for this stream's packages; clone it for each thread.
    pub fn opener(&self) -> PackageOpener {
        PackageOpener {
            key: self.headers.key().clone(),
            cipher: None,
        }
    }

    /// The next package, `Ok(None)` after the final one, or the first defect of the stream
    /// (an I/O error of kind `InvalidData` wrapping a [`DareError`]). After an error or the end,
    /// every call returns `Ok(None)`.
    pub fn next_package(&mut self) -> io::Result<Option<SealedPackage>> {
        if self.finished {
            return Ok(None);
        }
        match self.read_package() {
            Ok(Some(package)) => Ok(Some(package)),
            other => {
                self.finished = true;
                other
            }
        }
    }

    fn read_package(&mut self) -> io::Result<Option<SealedPackage>> {
        let mut header = [0; HEADER_SIZE];
        let read = read_up_to(&mut self.inner, &mut header)?;
        if read == 0 && self.headers.packages_opened() == 0 && self.allow_empty {
            return Ok(None);
        }
        if read < HEADER_SIZE {
            return Err(DareError::Truncated.into());
        }
        let checked = self.headers.check_header(&header)?;
        let suite = self
            .headers
            .suite()
            .ok_or(DareError::TagMismatch { package: 0 })?;
        let index = self.headers.packages_opened();
        let mut bytes = vec![0; HEADER_SIZE + checked.payload_len + TAG_SIZE];
        bytes[..HEADER_SIZE].copy_from_slice(&header);
        if read_up_to(&mut self.inner, &mut bytes[HEADER_SIZE..])? < bytes.len() - HEADER_SIZE {
            return Err(DareError::Truncated.into());
        }
        if checked.is_final {
            let mut probe = [0; 1];
            if read_up_to(&mut self.inner, &mut probe)? > 0 {
                return Err(DareError::TrailingData.into());
            }
            // Once the final package opens, the stream is complete.
            self.finished = true;
        }
        self.headers.hand_off();
        Ok(Some(SealedPackage {
            index,
            suite,
            bytes,
        }))
    }
}

/// Reads until `buffer` is full or the input ends; returns how much was read.
fn read_up_to(inner: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match inner.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Verifies and decrypts packages of one stream, in any order, on any thread.
pub struct PackageOpener {
    key: Key,
    cipher: Option<(CipherSuite, PackageCipher)>,
}

impl Clone for PackageOpener {
    fn clone(&self) -> Self {
        PackageOpener {
            key: self.key.clone(),
            cipher: None,
        }
    }
}

impl PackageOpener {
    /// The package's plaintext, only if its tag verifies at its position in the stream.
    pub fn open(&mut self, package: SealedPackage) -> Result<Vec<u8>, DareError> {
        let SealedPackage {
            index,
            suite,
            mut bytes,
        } = package;
        let cipher = match &self.cipher {
            Some((cached, cipher)) if *cached == suite => cipher,
            _ => {
                &self
                    .cipher
                    .insert((suite, PackageCipher::new(suite, &self.key)))
                    .1
            }
        };
        open_package(cipher, index, &mut bytes)?;
        let payload_len = bytes.len() - HEADER_SIZE - TAG_SIZE;
        bytes.copy_within(HEADER_SIZE..HEADER_SIZE + payload_len, 0);
        bytes.truncate(payload_len);
        Ok(bytes)
    }
}
