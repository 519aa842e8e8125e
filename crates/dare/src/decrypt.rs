use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};
use zeroize::Zeroizing;

use crate::package::{HEADER_SIZE, MAX_PACKAGE_SIZE, Opener, PackageHeader, TAG_SIZE};
use crate::split::PackageSplitter;
use crate::{DareError, Key};

enum Phase {
    /// Reading the next package's header into `package[..HEADER_SIZE]`.
    Header,
    /// Reading the body of a package whose header passed the checks.
    Body(PackageHeader),
    /// The final package verified; its plaintext is held back until the input is known to end.
    ConfirmEnd {
        payload_len: usize,
    },
    /// Verified plaintext at `package[released..end]` is ready for the caller.
    Release {
        end: usize,
        is_final: bool,
    },
    Done,
    Failed(DareError),
}

/// What a reader should do next.
enum Next<'a> {
    Plaintext(&'a [u8]),
    NeedInput,
    End,
    Failed(DareError),
}

/// The I/O-free half of the decrypting readers: it says how many input bytes it wants, checks
/// them, and hands out plaintext only from packages whose tag verified.
struct DecryptState {
    opener: Opener,
    package: Zeroizing<Vec<u8>>,
    /// Input bytes of the current package read so far.
    received: usize,
    /// Plaintext bytes of the current package already handed out.
    released: usize,
    /// Target of the read that checks for data after the final package.
    end_probe: [u8; 1],
    phase: Phase,
    allow_empty: bool,
}

impl DecryptState {
    fn new(key: &Key) -> Self {
        DecryptState {
            opener: Opener::new(key),
            package: Zeroizing::new(vec![0; MAX_PACKAGE_SIZE]),
            received: 0,
            released: 0,
            end_probe: [0],
            phase: Phase::Header,
            allow_empty: false,
        }
    }

    fn next(&self) -> Next<'_> {
        match &self.phase {
            Phase::Header | Phase::Body(_) | Phase::ConfirmEnd { .. } => Next::NeedInput,
            Phase::Release { end, .. } => Next::Plaintext(&self.package[self.released..*end]),
            Phase::Done => Next::End,
            Phase::Failed(err) => Next::Failed(*err),
        }
    }

    fn consume_plaintext(&mut self, n: usize) {
        let Phase::Release { end, is_final } = self.phase else {
            return;
        };
        self.released += n;
        if self.released == end {
            self.phase = if is_final { Phase::Done } else { Phase::Header };
            self.received = 0;
        }
    }

    /// Where the next input bytes go; only meaningful when [`DecryptState::next`] asked for
    /// input. Never extends past the current package, so the reader does not over-read.
    fn input_buffer(&mut self) -> &mut [u8] {
        let wanted = match &self.phase {
            Phase::Header => HEADER_SIZE,
            Phase::Body(header) => HEADER_SIZE + header.payload_len + TAG_SIZE,
            Phase::ConfirmEnd { .. } => return &mut self.end_probe,
            _ => 0,
        };
        &mut self.package[self.received.min(wanted)..wanted]
    }

    /// Accounts for `n` bytes read into [`DecryptState::input_buffer`]; 0 means end of input.
    fn input_received(&mut self, n: usize) {
        if let Err(err) = self.advance(n) {
            self.phase = Phase::Failed(err);
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), DareError> {
        match self.phase {
            Phase::Header => {
                if n == 0 {
                    let nothing_read = self.received == 0 && self.opener.packages_opened() == 0;
                    if nothing_read && self.allow_empty {
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                    return Err(DareError::Truncated);
                }
                self.received += n;
                if self.received == HEADER_SIZE {
                    let mut header = [0; HEADER_SIZE];
                    header.copy_from_slice(&self.package[..HEADER_SIZE]);
                    self.phase = Phase::Body(self.opener.check_header(&header)?);
                }
            }
            Phase::Body(header) => {
                if n == 0 {
                    return Err(DareError::Truncated);
                }
                self.received += n;
                let package_len = HEADER_SIZE + header.payload_len + TAG_SIZE;
                if self.received == package_len {
                    self.opener.open(&mut self.package[..package_len])?;
                    self.released = HEADER_SIZE;
                    self.phase = if header.is_final {
                        Phase::ConfirmEnd {
                            payload_len: header.payload_len,
                        }
                    } else {
                        Phase::Release {
                            end: HEADER_SIZE + header.payload_len,
                            is_final: false,
                        }
                    };
                }
            }
            Phase::ConfirmEnd { payload_len } => {
                if n > 0 {
                    return Err(DareError::TrailingData);
                }
                self.phase = Phase::Release {
                    end: HEADER_SIZE + payload_len,
                    is_final: true,
                };
            }
            Phase::Release { .. } | Phase::Done | Phase::Failed(_) => {}
        }
        Ok(())
    }
}

/// Decrypts a DARE 2.0 stream read from the inner reader.
///
/// Plaintext of a package is returned only after its tag verified; the plaintext of the final
/// package only once the input has ended right after it. `read` returns `Ok(0)` only for a
/// complete, authentic stream. Any defect is an [`io::Error`] of kind `InvalidData` wrapping a
/// [`DareError`] (see [`DareError::from_io`]) and every later `read` repeats it.
pub struct DecryptReader<R: Read> {
    inner: R,
    state: DecryptState,
}

impl<R: Read> DecryptReader<R> {
    /// Decrypts the stream in `inner` with `key`; either cipher suite is accepted.
    pub fn new(inner: R, key: &Key) -> Self {
        DecryptReader {
            inner,
            state: DecryptState::new(key),
        }
    }

    /// Accepts an empty input as the (valid) encryption of an empty plaintext, as `sio`'s
    /// version-detecting reader does. By default an empty input is [`DareError::Truncated`],
    /// because an empty stream carries no tag and a stream cut before its first package looks
    /// the same.
    pub fn allow_empty(mut self) -> Self {
        self.state.allow_empty = true;
        self
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Hands the input and key over to a [`PackageSplitter`], whose packages can be opened on
    /// several threads; see [`crate::split`]. Call it before the first `read`: bytes this reader
    /// has already consumed are not part of the splitter's stream.
    pub fn into_packages(self) -> PackageSplitter<R> {
        debug_assert!(self.state.received == 0 && self.state.opener.packages_opened() == 0);
        PackageSplitter::new(self.inner, self.state.opener.key())
            .with_empty_allowed(self.state.allow_empty)
    }

    #[cfg(test)]
    pub(crate) fn opener_mut(&mut self) -> &mut Opener {
        &mut self.state.opener
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state.next() {
                Next::Plaintext(plaintext) => {
                    let n = plaintext.len().min(out.len());
                    out[..n].copy_from_slice(&plaintext[..n]);
                    self.state.consume_plaintext(n);
                    return Ok(n);
                }
                Next::End => return Ok(0),
                Next::Failed(err) => return Err(err.into()),
                Next::NeedInput => {
                    let n = self.inner.read(self.state.input_buffer())?;
                    self.state.input_received(n);
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Decrypts a DARE 2.0 stream read from the inner tokio reader, with the guarantees of
    /// [`DecryptReader`].
    pub struct AsyncDecryptReader<R> {
        #[pin]
        inner: R,
        state: DecryptState,
    }
}

impl<R: AsyncRead> AsyncDecryptReader<R> {
    /// Decrypts the stream in `inner` with `key`; either cipher suite is accepted.
    pub fn new(inner: R, key: &Key) -> Self {
        AsyncDecryptReader {
            inner,
            state: DecryptState::new(key),
        }
    }

    /// Accepts an empty input as an empty plaintext; see [`DecryptReader::allow_empty`].
    pub fn allow_empty(mut self) -> Self {
        self.state.allow_empty = true;
        self
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead> AsyncRead for AsyncDecryptReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.state.next() {
                Next::Plaintext(plaintext) => {
                    let n = plaintext.len().min(out.remaining());
                    out.put_slice(&plaintext[..n]);
                    this.state.consume_plaintext(n);
                    return Poll::Ready(Ok(()));
                }
                Next::End => return Poll::Ready(Ok(())),
                Next::Failed(err) => return Poll::Ready(Err(err.into())),
                Next::NeedInput => {
                    let mut input = ReadBuf::new(this.state.input_buffer());
                    ready!(this.inner.as_mut().poll_read(cx, &mut input))?;
                    let n = input.filled().len();
                    this.state.input_received(n);
                }
            }
        }
    }
}
