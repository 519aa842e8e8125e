//! Bounded channels between the blocking stages and the async upload and download, exposed as
//! `Write` and `Read` so the stages stay plain synchronous code.

use std::io::{self, Read, Seek, SeekFrom, Write};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Size of the chunks handed between stages: large enough that channel operations cost nothing,
/// small enough that a few in flight keep memory low.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// What the last stage sends to the uploader.
#[derive(Debug)]
pub enum UploadMessage {
    /// The next bytes of the object.
    Data(Bytes),
    /// The object is complete: every byte was sent and every stage finished cleanly.
    End,
}

/// A `Write` that batches bytes into chunks and sends them over a bounded channel, blocking
/// when the receiver is behind (this is the back pressure that bounds memory).
pub struct ChunkWriter {
    sender: mpsc::Sender<UploadMessage>,
    buffer: BytesMut,
}

fn receiver_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the next stage stopped")
}

impl ChunkWriter {
    /// A writer feeding `sender`. Must be used from a blocking thread, never from async code.
    pub fn new(sender: mpsc::Sender<UploadMessage>) -> Self {
        Self {
            sender,
            buffer: BytesMut::with_capacity(CHUNK_SIZE),
        }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.buffer.reserve(CHUNK_SIZE);
        self.sender
            .blocking_send(UploadMessage::Data(chunk))
            .map_err(|_| receiver_gone())
    }

    /// Sends what is buffered, then the end marker: the receiver may now commit the object.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buffer()?;
        self.sender
            .blocking_send(UploadMessage::End)
            .map_err(|_| receiver_gone())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE - self.buffer.len();
        let taken = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..taken]);
        if self.buffer.len() >= CHUNK_SIZE {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are sent when full or at `finish`: flushing a DARE package at a time would only
        // multiply channel operations.
        Ok(())
    }
}

/// A `Read` over chunks arriving on a bounded channel. The sender reports its own failure as
/// an `Err` item; a channel closed without one is an unexpected end.
pub struct ChunkReader {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    /// Bytes consumed so far, read or skipped: the position [`Seek`] reports.
    position: u64,
}

impl ChunkReader {
    /// A reader draining `receiver`. Must be used from a blocking thread.
    pub fn new(receiver: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            receiver,
            current: Bytes::new(),
            position: 0,
        }
    }

    /// Waits for the next chunk when the current one is used up; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(error),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.fill()? {
            return Ok(0);
        }
        let taken = buf.len().min(self.current.len());
        buf[..taken].copy_from_slice(&self.current.split_to(taken));
        self.position += taken as u64;
        Ok(taken)
    }
}

/// Skipping forward, so that a reader walking tar headers (`tar::Archive::entries_with_seek`)
/// drops the files' contents instead of copying them out. A stream cannot go back, so only
/// `SeekFrom::Current` with a count of zero or more is served; skipping past the end of the
/// stream is an unexpected end, as reading would be.
impl Seek for ChunkReader {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Current(skip) = target else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a stream of chunks only skips forward from where it is",
            ));
        };
        let mut left = u64::try_from(skip).map_err(|_| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "a stream of chunks cannot go back",
            )
        })?;
        while left > 0 {
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended inside the bytes being skipped",
                ));
            }
            let dropped = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.current.len());
            let _ = self.current.split_to(dropped);
            self.position += dropped as u64;
            left -= dropped as u64;
        }
        Ok(self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_batches_into_chunks_and_ends_with_the_marker() {
        let (sender, mut receiver) = mpsc::channel(64);
        let mut writer = ChunkWriter::new(sender);
        writer.write_all(&vec![7u8; CHUNK_SIZE + 10]).unwrap();
        writer.finish().unwrap();
        let mut sizes = Vec::new();
        let mut ended = false;
        while let Ok(message) = receiver.try_recv() {
            match message {
                UploadMessage::Data(chunk) => sizes.push(chunk.len()),
                UploadMessage::End => ended = true,
            }
        }
        assert_eq!(sizes, vec![CHUNK_SIZE, 10]);
        assert!(ended);
    }

    #[test]
    fn writer_fails_once_the_receiver_is_gone() {
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let mut writer = ChunkWriter::new(sender);
        let error = writer.write_all(&vec![0u8; CHUNK_SIZE]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn reader_passes_on_the_senders_error() {
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        sender
            .try_send(Err(io::Error::other("connection reset")))
            .unwrap();
        let mut reader = ChunkReader::new(receiver);
        let mut text = Vec::new();
        let error = reader.read_to_end(&mut text).unwrap_err();
        assert_eq!(text, b"abc");
        assert_eq!(error.to_string(), "connection reset");
    }

    fn reader_over(chunks: &[&'static [u8]]) -> ChunkReader {
        let (sender, receiver) = mpsc::channel(chunks.len().max(1));
        for chunk in chunks {
            sender.try_send(Ok(Bytes::from_static(chunk))).unwrap();
        }
        ChunkReader::new(receiver)
    }

    #[test]
    fn reader_skips_forward_across_chunks_and_reports_its_position() {
        let mut reader = reader_over(&[b"abc", b"defg", b"hij"]);
        let mut two = [0u8; 2];
        reader.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"ab");
        assert_eq!(reader.seek(SeekFrom::Current(5)).unwrap(), 7);
        assert_eq!(reader.stream_position().unwrap(), 7);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"hij");
    }

    #[test]
    fn reader_refuses_to_go_back_or_to_skip_past_the_end() {
        let mut reader = reader_over(&[b"abc"]);
        for target in [SeekFrom::Current(-1), SeekFrom::Start(0), SeekFrom::End(0)] {
            let error = reader.seek(target).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::Unsupported, "{target:?}");
        }
        let error = reader.seek(SeekFrom::Current(4)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
