//! The passphrase envelopes around a DARE 2.0 stream.
//!
//! - Version 1, MinIO's `ncrypt` format: `salt(32 random bytes) | DARE 2.0 stream`, keyed with
//!   `scrypt(passphrase, salt, N = 32768, r = 16, p = 1, len = 32)`. The fresh salt gives every
//!   object its own key, which DARE requires; the scrypt step (a few tenths of a second of CPU
//!   and, with [`crate::kdf`], 16 MiB) is paid once per object. Base backups use it.
//! - Version 2, for many small objects written by one long-lived process (the WAL archive):
//!   `MAGIC(16) | salt(32) | object nonce(32) | DARE 2.0 stream`. A [`MasterKey`],
//!   `scrypt(passphrase, salt)` with the same parameters, is derived once per writer; each object
//!   is keyed with `HKDF-SHA256(ikm = master, salt = object nonce, info = OBJECT_KEY_INFO)`, so
//!   every object still has its own key while scrypt runs once per salt. The passphrase alone
//!   still opens every object.
//!
//! Readers ([`decrypt_reader`], [`Opener`]) take both: an input that starts with [`MAGIC`] is
//! version 2, anything else version 1. A version-1 salt starts with the magic only with
//! probability 2^-128. Changing any header byte changes the key (the magic: the object is read
//! as version 1 with another salt), so tampering shows up as a failed tag on the first package.
//! The async helpers run scrypt on tokio's blocking pool.

use std::io::{self, Read, Write};
use std::sync::Mutex;

use hkdf::Hkdf;
use sha2::Sha256;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::{
    AsyncDecryptReader, AsyncEncryptWriter, CipherSuite, DareError, DecryptReader, EncryptWriter,
    Key,
};

/// Length of the salt in front of the DARE stream.
pub const SALT_SIZE: usize = 32;

/// The 16 bytes that open a version-2 envelope.
pub const MAGIC: [u8; 16] = *b"tusk.envelope.v2";
/// Length of a version-2 envelope's per-object nonce.
pub const OBJECT_NONCE_SIZE: usize = 32;
/// Length of a version-2 envelope's header: magic, salt and object nonce.
pub const V2_HEADER_SIZE: usize = MAGIC.len() + SALT_SIZE + OBJECT_NONCE_SIZE;
/// HKDF's `info` input for a version-2 object key; it keeps these keys apart from any other use
/// of the same master key.
pub const OBJECT_KEY_INFO: &[u8] = b"tusk envelope v2 object key";

/// How many master keys an [`Opener`] remembers. One archiver lifetime is one salt, so a restore
/// meets a handful; the bound keeps a store full of salts from growing memory.
const CACHED_MASTER_KEYS: usize = 16;

/// The master key of version-2 envelopes: `scrypt(passphrase, salt)` for one salt, derived once
/// and used for many objects. Wiped when dropped.
pub struct MasterKey {
    salt: [u8; SALT_SIZE],
    key: Key,
}

impl MasterKey {
    /// Derives a master key under a fresh random salt (runs scrypt once).
    pub fn generate(passphrase: &[u8]) -> Result<Self, DareError> {
        let salt = random_bytes()?;
        Ok(Self::derive(passphrase, salt))
    }

    /// Derives the master key of `salt` (runs scrypt once).
    pub fn derive(passphrase: &[u8], salt: [u8; SALT_SIZE]) -> Self {
        let key = Key::derive_from_passphrase(passphrase, &salt);
        MasterKey { salt, key }
    }

    /// The salt this key was derived with; it is written in every object's header.
    pub fn salt(&self) -> &[u8; SALT_SIZE] {
        &self.salt
    }

    /// The key of the object with `nonce`:
    /// `HKDF-SHA256(ikm = master, salt = nonce, info = OBJECT_KEY_INFO, len = 32)`.
    pub fn object_key(&self, nonce: &[u8; OBJECT_NONCE_SIZE]) -> Key {
        let mut okm = [0; 32];
        Hkdf::<Sha256>::new(Some(nonce), self.key.as_bytes())
            .expand(OBJECT_KEY_INFO, &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let key = Key::from_bytes(okm);
        zeroize::Zeroize::zeroize(&mut okm);
        key
    }

    /// Writes a version-2 header with a fresh object nonce to `inner` and returns a writer that
    /// encrypts into it, with [`CipherSuite::preferred`]. No scrypt runs here. Call
    /// [`EncryptWriter::finish`] at the end.
    pub fn encrypt_writer<W: Write>(&self, mut inner: W) -> io::Result<EncryptWriter<W>> {
        let nonce: [u8; OBJECT_NONCE_SIZE] = random_bytes()?;
        let key = self.object_key(&nonce);
        inner.write_all(&MAGIC)?;
        inner.write_all(&self.salt)?;
        inner.write_all(&nonce)?;
        Ok(EncryptWriter::new(inner, &key, CipherSuite::preferred())?)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Opens objects of both envelope versions with one passphrase, remembering the master keys of
/// the salts it met, so that reading many version-2 objects of one writer runs scrypt once.
pub struct Opener {
    passphrase: Zeroizing<Vec<u8>>,
    masters: Mutex<Vec<std::sync::Arc<MasterKey>>>,
    /// Held while scrypt runs, so that objects of one salt opened at once derive it once (and
    /// never hold several 16 MiB scrypt tables at a time); version-1 objects take turns too.
    deriving: Mutex<()>,
}

/// What an envelope's header says about its key.
enum Header {
    V1 {
        salt: [u8; SALT_SIZE],
    },
    V2 {
        salt: [u8; SALT_SIZE],
        nonce: [u8; OBJECT_NONCE_SIZE],
    },
}

impl Header {
    /// The header whose first 16 bytes are `first`, followed by `rest[..rest_len]`.
    fn parse(
        first: [u8; 16],
        rest: &[u8; SALT_SIZE + OBJECT_NONCE_SIZE],
        rest_len: usize,
    ) -> Header {
        if rest_len == SALT_SIZE + OBJECT_NONCE_SIZE {
            let mut salt = [0; SALT_SIZE];
            salt.copy_from_slice(&rest[..SALT_SIZE]);
            let mut nonce = [0; OBJECT_NONCE_SIZE];
            nonce.copy_from_slice(&rest[SALT_SIZE..]);
            Header::V2 { salt, nonce }
        } else {
            let mut salt = [0; SALT_SIZE];
            salt[..16].copy_from_slice(&first);
            salt[16..].copy_from_slice(&rest[..16]);
            Header::V1 { salt }
        }
    }
}

/// How many header bytes follow the first 16: the rest of a version-1 salt, or a version-2
/// salt and nonce.
fn rest_len(first: &[u8; 16]) -> usize {
    if *first == MAGIC {
        SALT_SIZE + OBJECT_NONCE_SIZE
    } else {
        SALT_SIZE - 16
    }
}

impl Opener {
    /// An opener for objects sealed with `passphrase`.
    pub fn new(passphrase: &[u8]) -> Self {
        Opener {
            passphrase: Zeroizing::new(passphrase.to_vec()),
            masters: Mutex::new(Vec::new()),
            deriving: Mutex::new(()),
        }
    }

    /// Reads the envelope header from `inner` and returns a reader that decrypts the rest. A
    /// wrong passphrase or an altered header shows up as [`DareError::TagMismatch`] on the first
    /// read.
    pub fn decrypt_reader<R: Read>(&self, mut inner: R) -> io::Result<DecryptReader<R>> {
        let mut first = [0; 16];
        inner.read_exact(&mut first).map_err(salt_read_error)?;
        let len = rest_len(&first);
        let mut rest = [0; SALT_SIZE + OBJECT_NONCE_SIZE];
        inner
            .read_exact(&mut rest[..len])
            .map_err(salt_read_error)?;
        let key = self.key(Header::parse(first, &rest, len));
        Ok(DecryptReader::new(inner, &key))
    }

    /// Async [`Opener::decrypt_reader`]; scrypt, when it must run, runs on the blocking pool.
    pub async fn async_decrypt_reader<R: AsyncRead + Unpin>(
        &self,
        mut inner: R,
    ) -> io::Result<AsyncDecryptReader<R>> {
        let mut first = [0; 16];
        inner
            .read_exact(&mut first)
            .await
            .map_err(salt_read_error)?;
        let len = rest_len(&first);
        let mut rest = [0; SALT_SIZE + OBJECT_NONCE_SIZE];
        inner
            .read_exact(&mut rest[..len])
            .await
            .map_err(salt_read_error)?;
        let key = match Header::parse(first, &rest, len) {
            Header::V1 { salt } => derive_off_runtime(&self.passphrase, salt).await?,
            Header::V2 { salt, nonce } => {
                let master = match self.cached(&salt) {
                    Some(master) => master,
                    None => {
                        let passphrase = self.passphrase.clone();
                        let master = tokio::task::spawn_blocking(move || {
                            MasterKey::derive(&passphrase, salt)
                        })
                        .await
                        .map_err(io::Error::other)?;
                        self.remember(master)
                    }
                };
                master.object_key(&nonce)
            }
        };
        Ok(AsyncDecryptReader::new(inner, &key))
    }

    fn key(&self, header: Header) -> Key {
        match header {
            Header::V1 { salt } => {
                // One derivation at a time, so objects opened at once (a recovery's prefetch)
                // never hold several scrypt tables together.
                let _deriving = self.deriving.lock().unwrap_or_else(|e| e.into_inner());
                Key::derive_from_passphrase(&self.passphrase, &salt)
            }
            Header::V2 { salt, nonce } => {
                let master = self.cached(&salt).unwrap_or_else(|| {
                    let _deriving = self.deriving.lock().unwrap_or_else(|e| e.into_inner());
                    // Another thread may have derived it while this one waited.
                    self.cached(&salt)
                        .unwrap_or_else(|| self.remember(MasterKey::derive(&self.passphrase, salt)))
                });
                master.object_key(&nonce)
            }
        }
    }

    fn cached(&self, salt: &[u8; SALT_SIZE]) -> Option<std::sync::Arc<MasterKey>> {
        let masters = self.masters.lock().unwrap_or_else(|e| e.into_inner());
        masters.iter().find(|master| master.salt == *salt).cloned()
    }

    fn remember(&self, master: MasterKey) -> std::sync::Arc<MasterKey> {
        let master = std::sync::Arc::new(master);
        let mut masters = self.masters.lock().unwrap_or_else(|e| e.into_inner());
        if masters.len() >= CACHED_MASTER_KEYS {
            masters.remove(0);
        }
        masters.push(std::sync::Arc::clone(&master));
        master
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener(<redacted>)")
    }
}

/// Writes a fresh salt to `inner` and returns a writer that encrypts into it under the key
/// derived from `passphrase`, with [`CipherSuite::preferred`]. Call
/// [`EncryptWriter::finish`] at the end.
pub fn encrypt_writer<W: Write>(mut inner: W, passphrase: &[u8]) -> io::Result<EncryptWriter<W>> {
    let salt: [u8; SALT_SIZE] = random_bytes()?;
    let key = Key::derive_from_passphrase(passphrase, &salt);
    inner.write_all(&salt)?;
    Ok(EncryptWriter::new(inner, &key, CipherSuite::preferred())?)
}

/// Reads the envelope header (either version) from `inner` and returns a reader that decrypts
/// the rest with the key derived from `passphrase`. A wrong passphrase shows up as
/// [`DareError::TagMismatch`] on the first read. To open many version-2 objects, keep an
/// [`Opener`] instead.
pub fn decrypt_reader<R: Read>(inner: R, passphrase: &[u8]) -> io::Result<DecryptReader<R>> {
    Opener::new(passphrase).decrypt_reader(inner)
}

/// Async [`encrypt_writer`]: shut the returned writer down to write the final package.
pub async fn async_encrypt_writer<W: AsyncWrite + Unpin>(
    mut inner: W,
    passphrase: &[u8],
) -> io::Result<AsyncEncryptWriter<W>> {
    let salt: [u8; SALT_SIZE] = random_bytes()?;
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
    inner: R,
    passphrase: &[u8],
) -> io::Result<AsyncDecryptReader<R>> {
    Opener::new(passphrase).async_decrypt_reader(inner).await
}

fn random_bytes<const N: usize>() -> Result<[u8; N], DareError> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(DareError::Random)?;
    Ok(bytes)
}

fn salt_read_error(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        DareError::MissingSalt.into()
    } else {
        err
    }
}

/// scrypt takes tenths of a second of CPU, too long to block an async worker thread.
async fn derive_off_runtime(passphrase: &[u8], salt: [u8; SALT_SIZE]) -> io::Result<Key> {
    let passphrase = Zeroizing::new(passphrase.to_vec());
    tokio::task::spawn_blocking(move || Key::derive_from_passphrase(&passphrase, &salt))
        .await
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_key_matches_python_scrypt_and_hkdf() {
        // Python: m = hashlib.scrypt(pass, salt=salt, n=32768, r=16, p=1, dklen=32);
        // prk = HMAC-SHA256(nonce, m); okm = HMAC-SHA256(prk, OBJECT_KEY_INFO || 0x01).
        let salt: [u8; SALT_SIZE] = std::array::from_fn(|i| 100 + i as u8);
        let nonce: [u8; OBJECT_NONCE_SIZE] = std::array::from_fn(|i| 200 + i as u8);
        let master = MasterKey::derive(b"correct horse battery staple", salt);
        let key = master.object_key(&nonce);
        let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "e0b66b39ed5a375088e679b33515dc70f709ef158a762acbb96a42ff42a61fd5"
        );
        assert!(!format!("{master:?}").contains("72"));
    }

    #[test]
    fn an_opener_derives_each_salt_once() {
        let master = MasterKey::generate(b"pass").unwrap();
        let opener = Opener::new(b"pass");
        for _ in 0..3 {
            let mut writer = master.encrypt_writer(Vec::new()).unwrap();
            writer.write_all(b"segment").unwrap();
            let sealed = writer.finish().unwrap();
            let mut plain = Vec::new();
            opener
                .decrypt_reader(sealed.as_slice())
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, b"segment");
        }
        assert_eq!(opener.masters.lock().unwrap().len(), 1);
    }
}
