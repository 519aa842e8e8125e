//! Bounded channels between the blocking stages and the async upload and download, exposed as
//! `Write` and `Read` so the stages stay plain synchronous code.

use std::io::{self, Read, Write};

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
}

impl ChunkReader {
    /// A reader draining `receiver`. Must be used from a blocking thread.
    pub fn new(receiver: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let taken = buf.len().min(self.current.len());
        buf[..taken].copy_from_slice(&self.current.split_to(taken));
        Ok(taken)
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
}
