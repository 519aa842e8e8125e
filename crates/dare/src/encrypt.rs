use std::io::{self, Write};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;
use zeroize::Zeroizing;

use crate::package::{HEADER_SIZE, MAX_PACKAGE_SIZE, MAX_PAYLOAD_SIZE, Sealer};
use crate::{CipherSuite, DareError, Key};

/// The I/O-free half of the encrypting writers: one package buffer that collects plaintext and
/// is sealed in place.
struct EncryptState {
    sealer: Sealer,
    /// `header | payload | tag` of the package being filled or written out.
    package: Zeroizing<Vec<u8>>,
    /// Plaintext bytes collected in the payload area.
    buffered: usize,
    /// Bytes of a sealed package not yet handed to the inner writer.
    unwritten: Range<usize>,
    finished: bool,
}

impl EncryptState {
    fn new(sealer: Sealer) -> Self {
        EncryptState {
            sealer,
            package: Zeroizing::new(vec![0; MAX_PACKAGE_SIZE]),
            buffered: 0,
            unwritten: 0..0,
            finished: false,
        }
    }

    fn unwritten(&self) -> &[u8] {
        &self.package[self.unwritten.clone()]
    }

    fn mark_written(&mut self, n: usize) {
        self.unwritten.start += n;
    }

    /// Takes plaintext into the package buffer and returns how much it took. Returns 0 for
    /// non-empty `data` only when it instead sealed the full buffer as a non-final package: the
    /// caller writes that out and calls again. Must be called with nothing unwritten.
    fn buffer_plaintext(&mut self, data: &[u8]) -> Result<usize, DareError> {
        debug_assert!(self.unwritten.is_empty());
        if self.finished {
            return Err(DareError::WriteAfterFinish);
        }
        if data.is_empty() {
            return Ok(0);
        }
        // A full payload is sealed only once more plaintext arrives, because only then is it
        // known not to be the last one.
        if self.buffered == MAX_PAYLOAD_SIZE {
            self.seal(false)?;
            return Ok(0);
        }
        let start = HEADER_SIZE + self.buffered;
        let n = data.len().min(MAX_PAYLOAD_SIZE - self.buffered);
        self.package[start..start + n].copy_from_slice(&data[..n]);
        self.buffered += n;
        Ok(n)
    }

    /// Seals the buffered plaintext as the final package. An empty plaintext produces no package
    /// at all, as in `sio`. Idempotent.
    fn finish(&mut self) -> Result<(), DareError> {
        if self.finished {
            return Ok(());
        }
        if self.buffered > 0 {
            self.seal(true)?;
        }
        self.finished = true;
        Ok(())
    }

    fn seal(&mut self, is_final: bool) -> Result<(), DareError> {
        let len = self
            .sealer
            .seal(&mut self.package, self.buffered, is_final)?;
        self.buffered = 0;
        self.unwritten = 0..len;
        Ok(())
    }
}

/// Encrypts everything written to it into a DARE 2.0 stream on the inner writer.
///
/// Plaintext is sealed in 64 KiB packages as it arrives; [`EncryptWriter::finish`] seals the
/// final package. A writer dropped without `finish` leaves a stream without a final package,
/// which every reader rejects as [`DareError::Truncated`]. `flush` writes out sealed packages
/// only: a partial payload can not be sealed before the stream ends.
pub struct EncryptWriter<W: Write> {
    inner: W,
    state: EncryptState,
}

impl<W: Write> EncryptWriter<W> {
    /// Starts a stream sealed with `suite` under `key`, with a fresh random nonce. Nothing is
    /// written to `inner` until the first package is sealed.
    ///
    /// `key` must not encrypt any other stream.
    pub fn new(inner: W, key: &Key, suite: CipherSuite) -> Result<Self, DareError> {
        Ok(EncryptWriter {
            inner,
            state: EncryptState::new(Sealer::new(key, suite)?),
        })
    }

    /// Seals the final package, writes out everything, flushes the inner writer and returns it.
    pub fn finish(mut self) -> io::Result<W> {
        self.state.finish()?;
        self.write_unwritten()?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn write_unwritten(&mut self) -> io::Result<()> {
        while !self.state.unwritten().is_empty() {
            let n = self.inner.write(self.state.unwritten())?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.state.mark_written(n);
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn with_sealer(inner: W, sealer: Sealer) -> Self {
        EncryptWriter {
            inner,
            state: EncryptState::new(sealer),
        }
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        loop {
            self.write_unwritten()?;
            let taken = self.state.buffer_plaintext(data)?;
            if taken > 0 || data.is_empty() {
                return Ok(taken);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_unwritten()?;
        self.inner.flush()
    }
}

pin_project_lite::pin_project! {
    /// Encrypts everything written to it into a DARE 2.0 stream on the inner tokio writer.
    ///
    /// `poll_shutdown` seals and writes the final package, then shuts the inner writer down. A
    /// writer dropped before shutdown leaves a stream that every reader rejects as
    /// [`DareError::Truncated`]. `poll_flush` writes out sealed packages only.
    pub struct AsyncEncryptWriter<W> {
        #[pin]
        inner: W,
        state: EncryptState,
    }
}

impl<W: AsyncWrite> AsyncEncryptWriter<W> {
    /// Starts a stream sealed with `suite` under `key`, with a fresh random nonce. Nothing is
    /// written to `inner` until the first package is sealed.
    ///
    /// `key` must not encrypt any other stream.
    pub fn new(inner: W, key: &Key, suite: CipherSuite) -> Result<Self, DareError> {
        Ok(AsyncEncryptWriter {
            inner,
            state: EncryptState::new(Sealer::new(key, suite)?),
        })
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer; after shutdown it holds the whole stream.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

fn poll_write_unwritten<W: AsyncWrite>(
    mut inner: Pin<&mut W>,
    state: &mut EncryptState,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !state.unwritten().is_empty() {
        let n = ready!(inner.as_mut().poll_write(cx, state.unwritten()))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        state.mark_written(n);
    }
    Poll::Ready(Ok(()))
}

impl<W: AsyncWrite> AsyncWrite for AsyncEncryptWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        loop {
            ready!(poll_write_unwritten(this.inner.as_mut(), this.state, cx))?;
            let taken = this.state.buffer_plaintext(data)?;
            if taken > 0 || data.is_empty() {
                return Poll::Ready(Ok(taken));
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(poll_write_unwritten(this.inner.as_mut(), this.state, cx))?;
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        this.state.finish()?;
        ready!(poll_write_unwritten(this.inner.as_mut(), this.state, cx))?;
        this.inner.poll_shutdown(cx)
    }
}
