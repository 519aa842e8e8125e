//! The passphrase envelope of MinIO's `ncrypt` tool: `salt(32 random bytes) | DARE 2.0 stream`,
//! keyed with `scrypt(passphrase, salt, N = 32768, r = 16, p = 1, len = 32)`.
//!
//! The fresh salt gives every object its own key, which DARE requires. The scrypt step is paid
//! once per object; the async helpers run it on tokio's blocking pool.

use std::io::{self, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::{
    AsyncDecryptReader, AsyncEncryptWriter, CipherSuite, DareError, DecryptReader, EncryptWriter,
    Key,
};

/// Length of the salt in front of the DARE stream.
pub const SALT_SIZE: usize = 32;

/// Writes a fresh salt to `inner` and returns a writer that encrypts into it under the key
/// derived from `passphrase`, with [`CipherSuite::preferred`]. Call
/// [`EncryptWriter::finish`] at the end.
pub fn encrypt_writer<W: Write>(mut inner: W, passphrase: &[u8]) -> io::Result<EncryptWriter<W>> {
    let salt = random_salt()?;
    let key = Key::derive_from_passphrase(passphrase, &salt);
    inner.write_all(&salt)?;
    Ok(EncryptWriter::new(inner, &key, CipherSuite::preferred())?)
}

/// Reads the salt from `inner` and returns a reader that decrypts the rest with the key derived
/// from `passphrase`. A wrong passphrase shows up as [`DareError::TagMismatch`] on the first read.
pub fn decrypt_reader<R: Read>(mut inner: R, passphrase: &[u8]) -> io::Result<DecryptReader<R>> {
    let mut salt = [0; SALT_SIZE];
    inner.read_exact(&mut salt).map_err(salt_read_error)?;
    let key = Key::derive_from_passphrase(passphrase, &salt);
    Ok(DecryptReader::new(inner, &key))
}

/// Async [`encrypt_writer`]: shut the returned writer down to write the final package.
pub async fn async_encrypt_writer<W: AsyncWrite + Unpin>(
    mut inner: W,
    passphrase: &[u8],
) -> io::Result<AsyncEncryptWriter<W>> {
    let salt = random_salt()?;
    let key = derive_off_runtime(passphrase, salt).await?;
    inner.write_all(&salt).await?;
    Ok(AsyncEncryptWriter::new(
        inner,
        &key,
        CipherSuite::preferred(),
    )?)
}

/// Async [`decrypt_reader`].
pub async fn async_decrypt_reader<R: AsyncRead + Unpin>(
    mut inner: R,
    passphrase: &[u8],
) -> io::Result<AsyncDecryptReader<R>> {
    let mut salt = [0; SALT_SIZE];
    inner.read_exact(&mut salt).await.map_err(salt_read_error)?;
    let key = derive_off_runtime(passphrase, salt).await?;
    Ok(AsyncDecryptReader::new(inner, &key))
}

fn random_salt() -> Result<[u8; SALT_SIZE], DareError> {
    let mut salt = [0; SALT_SIZE];
    getrandom::fill(&mut salt).map_err(DareError::Random)?;
    Ok(salt)
}

fn salt_read_error(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        DareError::MissingSalt.into()
    } else {
        err
    }
}

/// scrypt takes tens of milliseconds of CPU, too long to block an async worker thread.
async fn derive_off_runtime(passphrase: &[u8], salt: [u8; SALT_SIZE]) -> io::Result<Key> {
    let passphrase = Zeroizing::new(passphrase.to_vec());
    tokio::task::spawn_blocking(move || Key::derive_from_passphrase(&passphrase, &salt))
        .await
        .map_err(io::Error::other)
}
