//! Round trips through the std and tokio adapters at and around package boundaries, with
//! arbitrary write and read chunkings.

mod common;

use std::io::{Read, Write};

use common::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tusk_dare::{
    AsyncDecryptReader, AsyncEncryptWriter, CipherSuite, DecryptReader, EncryptWriter, Key,
    encrypted_size,
};

/// Lengths of 0 to 3 packages, dense around the boundaries.
fn plaintext_len() -> impl Strategy<Value = usize> {
    let boundaries = (0..=3usize).flat_map(|k| {
        let at = k * FULL;
        [at.saturating_sub(1), at, at + 1]
    });
    prop_oneof![
        proptest::sample::select(boundaries.collect::<Vec<_>>()),
        0..=3 * FULL + 1,
    ]
}

fn suite() -> impl Strategy<Value = CipherSuite> {
    proptest::sample::select(SUITES.to_vec())
}

/// Chunk sizes, cycled over the data; mixes tiny, package-sized and larger-than-package steps.
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![1..=64usize, 1..=3 * FULL, Just(FULL), Just(FULL + 32)],
        1..6,
    )
}

fn chunks<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

fn std_round_trip(
    key: &Key,
    suite: CipherSuite,
    plaintext: &[u8],
    writes: &[usize],
    reads: &[usize],
) -> (Vec<u8>, Vec<u8>) {
    let mut writer = EncryptWriter::new(Vec::new(), key, suite).unwrap();
    for chunk in chunks(plaintext, writes) {
        writer.write_all(chunk).unwrap();
    }
    let stream = writer.finish().unwrap();

    let mut reader = DecryptReader::new(stream.as_slice(), key).allow_empty();
    let mut decrypted = Vec::new();
    let mut buf = vec![0; 4 * FULL];
    for size in reads.iter().cycle() {
        let n = reader.read(&mut buf[..*size]).unwrap();
        if n == 0 {
            break;
        }
        decrypted.extend_from_slice(&buf[..n]);
    }
    (stream, decrypted)
}

/// Runs the writer and reader as concurrent tasks over a small in-memory pipe, so both see
/// partial writes and pending reads.
async fn async_round_trip(
    key: &Key,
    suite: CipherSuite,
    plaintext: &[u8],
    writes: &[usize],
    reads: &[usize],
    pipe_capacity: usize,
) -> (usize, Vec<u8>) {
    let (near, far) = tokio::io::duplex(pipe_capacity);
    let counted = CountingWriter::new(near);
    let written = counted.counter();
    let mut writer = AsyncEncryptWriter::new(counted, key, suite).unwrap();
    let owned_chunks: Vec<Vec<u8>> = chunks(plaintext, writes)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    let writing = tokio::spawn(async move {
        for chunk in owned_chunks {
            writer.write_all(&chunk).await.unwrap();
        }
        writer.shutdown().await.unwrap();
    });

    let mut reader = AsyncDecryptReader::new(far, key).allow_empty();
    let mut decrypted = Vec::new();
    let mut buf = vec![0; 4 * FULL];
    for size in reads.iter().cycle() {
        let n = reader.read(&mut buf[..*size]).await.unwrap();
        if n == 0 {
            break;
        }
        decrypted.extend_from_slice(&buf[..n]);
    }
    writing.await.unwrap();
    let total = written.load(std::sync::atomic::Ordering::SeqCst);
    (total, decrypted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn std_adapters_round_trip(
        len in plaintext_len(),
        suite in suite(),
        writes in chunking(),
        reads in chunking(),
    ) {
        let key = test_key(0x5A);
        let plaintext = plaintext(len);
        let (stream, decrypted) = std_round_trip(&key, suite, &plaintext, &writes, &reads);
        prop_assert_eq!(stream.len() as u64, encrypted_size(len as u64));
        prop_assert!(decrypted == plaintext, "plaintext of {} bytes differs", len);
    }

    #[test]
    fn tokio_adapters_round_trip(
        len in plaintext_len(),
        suite in suite(),
        writes in chunking(),
        reads in chunking(),
        pipe_capacity in 1..100_000usize,
    ) {
        let key = test_key(0xA5);
        let plaintext = plaintext(len);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (stream_len, decrypted) = runtime.block_on(
            async_round_trip(&key, suite, &plaintext, &writes, &reads, pipe_capacity),
        );
        prop_assert_eq!(stream_len as u64, encrypted_size(len as u64));
        prop_assert!(decrypted == plaintext, "plaintext of {} bytes differs", len);
    }
}

#[test]
fn std_and_tokio_streams_are_interchangeable() {
    let key = test_key(7);
    let plaintext = plaintext(2 * FULL + 17);
    for suite in SUITES {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let from_tokio = runtime.block_on(async {
            let mut writer = AsyncEncryptWriter::new(Vec::new(), &key, suite).unwrap();
            writer.write_all(&plaintext).await.unwrap();
            writer.shutdown().await.unwrap();
            writer.into_inner()
        });
        let (released, err) = decrypt_std(&key, &from_tokio);
        assert_eq!(err, None);
        assert_eq!(released, plaintext);

        let from_std = encrypt(&key, suite, &plaintext);
        let (released, err) = runtime.block_on(decrypt_async(&key, &from_std));
        assert_eq!(err, None);
        assert_eq!(released, plaintext);
    }
}

#[tokio::test]
async fn async_writer_dropped_before_shutdown_is_truncated() {
    let key = test_key(8);
    let mut writer = AsyncEncryptWriter::new(Vec::new(), &key, CipherSuite::Aes256Gcm).unwrap();
    writer.write_all(&plaintext(FULL + 3)).await.unwrap();
    writer.flush().await.unwrap();
    let partial = writer.into_inner();
    let (_, err) = decrypt_async(&key, &partial).await;
    assert_eq!(err, Some(tusk_dare::DareError::Truncated));
}

#[tokio::test]
async fn async_write_after_shutdown_fails() {
    let key = test_key(8);
    let mut writer = AsyncEncryptWriter::new(Vec::new(), &key, CipherSuite::Aes256Gcm).unwrap();
    writer.write_all(b"abc").await.unwrap();
    writer.shutdown().await.unwrap();
    let err = writer.write_all(b"more").await.unwrap_err();
    assert_eq!(
        tusk_dare::DareError::from_io(&err),
        Some(&tusk_dare::DareError::WriteAfterFinish)
    );
}

/// Counts the bytes that pass through to the wrapped writer.
struct CountingWriter<W> {
    inner: W,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<W> CountingWriter<W> {
    fn new(inner: W) -> Self {
        CountingWriter {
            inner,
            count: Default::default(),
        }
    }

    fn counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.count.clone()
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if let std::task::Poll::Ready(Ok(n)) = poll {
            self.count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
