//! Compression stage: gzip or zstd compressed on every core, and the matching decompression for
//! restore.
//!
//! gzip is written as a series of independent members (mgzip's layout), each deflated whole
//! (by libdeflate or zlib-ng, see [`LIBDEFLATE_UP_TO_LEVEL`]) and naming its own size in a
//! header field, so that a restore can cut the stream into members without inflating it and
//! inflate them on every core; any gzip reader still reads the object as one multi-member gzip
//! stream. zstd is written likewise as independent frames of [`FRAME_INPUT_SIZE`] that state
//! their content size, between a start and an end marker (skippable frames); a restore finds
//! each frame's end by walking its block headers. Any zstd reader still reads the object.
//! `docs/backup-format.md` describes both layouts byte by byte.

use std::io::{self, BufReader, Read, Write};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::{self, JoinHandle};

use crate::parallel::{OrderedReader, OrderedStage, worker_count};

/// How the tar stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (the object name says `.gz`), level 0-9.
    Gzip {
        /// Compression level, 0-9; 6 is gzip's default.
        level: u32,
    },
    /// zstd, level 1-22.
    Zstd {
        /// Compression level, 1-22; 3 is zstd's default.
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    /// Reads `TUSK_BACKUP_COMPRESSION` ("gzip" or "zstd") and `TUSK_BACKUP_COMPRESSION_LEVEL`.
    pub fn from_settings(algorithm: Option<&str>, level: Option<&str>) -> Result<Self, String> {
        let level = level
            .filter(|level| !level.is_empty())
            .map(|level| {
                level
                    .parse::<i32>()
                    .map_err(|_| format!("compression level {level:?} is not a number"))
            })
            .transpose()?;
        match algorithm.unwrap_or("gzip") {
            "" | "gzip" => {
                let level = level.unwrap_or(6);
                if !(0..=9).contains(&level) {
                    return Err(format!("gzip level {level} is outside 0-9"));
                }
                Ok(Compression::Gzip {
                    level: level.unsigned_abs(),
                })
            }
            "zstd" => {
                let level = level.unwrap_or(3);
                if !(1..=22).contains(&level) {
                    return Err(format!("zstd level {level} is outside 1-22"));
                }
                Ok(Compression::Zstd { level })
            }
            other => Err(format!("unknown compression {other:?}; use gzip or zstd")),
        }
    }

    /// The matching value of the PostgresBackup resource.
    pub fn as_api(self) -> tusk_api::backup::Compression {
        match self {
            Compression::Gzip { .. } => tusk_api::backup::Compression::Gzip,
            Compression::Zstd { .. } => tusk_api::backup::Compression::Zstd,
        }
    }
}

/// A compressing writer: the plaintext is cut into chunks of [`MEMBER_INPUT_SIZE`] (gzip) or
/// [`FRAME_INPUT_SIZE`] (zstd), each compressed on its own into an independent gzip member or
/// zstd frame on every core (an [`OrderedStage`]), and written in order by a thread that owns
/// the inner writer. `finish` writes the stream's end marker and hands the inner writer back.
pub struct CompressWriter<W: Write + Send + 'static> {
    pending: Vec<u8>,
    chunk_size: usize,
    /// Full chunks' plaintext, to the stage. Dropped to tell it the stream ended.
    chunks: Option<SyncSender<Vec<u8>>>,
    /// Writes the compressed chunks in order and hands the inner writer back, or the first
    /// error (of a worker or of the inner writer).
    writer: Option<JoinHandle<io::Result<W>>>,
    /// What ends the stream: [`END_MEMBER`] or [`ZSTD_END_FRAME`].
    end: &'static [u8],
}

/// The number of compression threads: every core, as pigz does.
fn compression_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |count| count.get())
}

impl<W: Write + Send + 'static> CompressWriter<W> {
    /// Starts compressing into `inner`.
    pub fn new(compression: Compression, mut inner: W) -> io::Result<Self> {
        let (compressor, chunk_size, end) = match compression {
            Compression::Gzip { level } => {
                let compressor = ChunkCompressor::Gzip(MemberCompressor::new(level)?);
                (compressor, MEMBER_INPUT_SIZE, &END_MEMBER[..])
            }
            Compression::Zstd { level } => {
                let compressor = ChunkCompressor::Zstd(FrameCompressor::new(level)?);
                inner.write_all(&ZSTD_START_FRAME)?;
                (compressor, FRAME_INPUT_SIZE, &ZSTD_END_FRAME[..])
            }
        };
        // No chunk waits in this channel: the stage's cutting thread already holds the next
        // one for the first free worker, and each chunk held costs its plaintext.
        let (chunks, plaintexts) = sync_channel::<Vec<u8>>(0);
        let name = compressor.name();
        let mut stage = OrderedStage::start(
            name,
            compression_threads(),
            // The sender dropped (finish, or the writer gone) ends the stream.
            move || Ok(plaintexts.recv().ok()),
            {
                let mut compressor = compressor;
                move |plaintext: Vec<u8>| compressor.compress(&plaintext)
            },
        )?;
        let writer = thread::Builder::new()
            .name(format!("{name}-write"))
            .spawn(move || {
                while let Some(chunk) = stage.next_result() {
                    inner.write_all(&chunk?)?;
                }
                Ok(inner)
            })?;
        Ok(CompressWriter {
            pending: Vec::with_capacity(chunk_size),
            chunk_size,
            chunks: Some(chunks),
            writer: Some(writer),
            end,
        })
    }

    /// Hands the pending plaintext to the stage as one chunk.
    fn send_chunk(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let plaintext = std::mem::replace(&mut self.pending, Vec::with_capacity(self.chunk_size));
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(plaintext).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The stage stopped taking chunks: the writer thread ended early, with its cause.
            Err(self.join_writer().err().unwrap_or_else(|| {
                io::Error::other("the compressed stream's writer stopped before the stream ended")
            }))
        }
    }

    fn join_writer(&mut self) -> io::Result<W> {
        self.chunks = None;
        match self.writer.take() {
            Some(writer) => writer.join().unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the compressed stream's writer thread panicked",
                ))
            }),
            None => Err(io::Error::other("the compressed stream has already ended")),
        }
    }

    /// Compresses what is pending, waits for every chunk to be written, writes the end marker
    /// and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_chunk()?;
        let mut inner = self.join_writer()?;
        inner.write_all(self.end)?;
        Ok(inner)
    }
}

impl<W: Write + Send + 'static> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let taken = buf.len().min(self.chunk_size - self.pending.len());
        self.pending.extend_from_slice(&buf[..taken]);
        if self.pending.len() == self.chunk_size {
            self.send_chunk()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are written when full or at `finish`: a flush must not cut a short chunk, and
        // the inner writer belongs to the writing thread, which writes each chunk whole.
        Ok(())
    }
}

/// One worker's compressor, cloned for each worker without its context: a context is not shared
/// between threads, so each makes its own on its first chunk.
#[derive(Clone)]
enum ChunkCompressor {
    /// A sized gzip member per chunk, deflated by libdeflate or zlib-ng by level.
    Gzip(MemberCompressor),
    /// A zstd frame per chunk.
    Zstd(FrameCompressor),
}

impl ChunkCompressor {
    /// The stage's name, for its threads.
    fn name(&self) -> &'static str {
        match self {
            ChunkCompressor::Gzip(_) => "gzip",
            ChunkCompressor::Zstd(_) => "zstd",
        }
    }

    fn compress(&mut self, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            ChunkCompressor::Gzip(members) => members.compress(plaintext),
            ChunkCompressor::Zstd(frames) => frames.compress(plaintext),
        }
    }
}

/// The highest gzip level deflated by libdeflate; the levels above it are zlib-ng's.
///
/// Measured as whole backups of a 1 GB database whose data compresses like production data
/// (about 2.7:1) and of pgbench's 1.5 GB (about 17:1): at level 6 libdeflate was 1.5x as fast
/// as zlib-ng and stored 0.3% more on the first, 1.7x as fast with 4.5% less on the second. At
/// level 7 libdeflate was faster too but stored 0.9% more on the realistic data, and the levels
/// above the default are chosen to store less: zlib-ng keeps them. `docs/benchmarks.md` has the
/// figures.
pub const LIBDEFLATE_UP_TO_LEVEL: u32 = 6;

/// One worker's deflate context.
enum Deflater {
    /// libdeflate, which compresses a whole buffer at once, as a member is.
    Libdeflate(libdeflater::Compressor),
    /// zlib-ng, through flate2, as raw deflate.
    ZlibNg(flate2::Compress),
}

impl Deflater {
    fn new(level: u32) -> io::Result<Self> {
        if level <= LIBDEFLATE_UP_TO_LEVEL {
            let level = i32::try_from(level)
                .ok()
                .and_then(|level| libdeflater::CompressionLvl::new(level).ok())
                .ok_or_else(|| invalid(format!("gzip level {level} is outside 0-9")))?;
            Ok(Deflater::Libdeflate(libdeflater::Compressor::new(level)))
        } else if level <= 9 {
            Ok(Deflater::ZlibNg(flate2::Compress::new(
                flate2::Compression::new(level),
                false,
            )))
        } else {
            Err(invalid(format!("gzip level {level} is outside 0-9")))
        }
    }

    /// The most deflate data `len` bytes of plaintext can become.
    fn bound(&mut self, len: usize) -> usize {
        match self {
            Deflater::Libdeflate(compressor) => compressor.deflate_compress_bound(len),
            // zlib's deflateBound for raw deflate is about len + len / 4096 + 13; the slack is
            // room to spare, and running out of it is an error, never a shorter member.
            Deflater::ZlibNg(_) => len + len / 64 + 64,
        }
    }

    /// Deflates `plaintext` into `output` as one complete raw deflate stream; returns its
    /// length.
    fn deflate(&mut self, plaintext: &[u8], output: &mut [u8]) -> io::Result<usize> {
        match self {
            Deflater::Libdeflate(compressor) => compressor
                .deflate_compress(plaintext, output)
                .map_err(io::Error::other),
            Deflater::ZlibNg(compress) => {
                compress.reset();
                let status = compress
                    .compress(plaintext, output, flate2::FlushCompress::Finish)
                    .map_err(io::Error::other)?;
                let consumed = usize::try_from(compress.total_in()).ok();
                if status != flate2::Status::StreamEnd || consumed != Some(plaintext.len()) {
                    return Err(io::Error::other(
                        "a gzip member's deflate data outgrew the room made for it",
                    ));
                }
                usize::try_from(compress.total_out()).map_err(io::Error::other)
            }
        }
    }
}

/// Deflates a chunk into one sized gzip member (`docs/backup-format.md`), with libdeflate or
/// zlib-ng by level ([`LIBDEFLATE_UP_TO_LEVEL`]).
struct MemberCompressor {
    /// gzip's level, 0-9.
    level: u32,
    /// Made on the worker's first member: a context is not shared between threads.
    context: Option<Deflater>,
    /// Room for the largest member, reused, as [`FrameCompressor::scratch`].
    scratch: Vec<u8>,
}

impl Clone for MemberCompressor {
    fn clone(&self) -> Self {
        MemberCompressor {
            level: self.level,
            context: None,
            scratch: Vec::new(),
        }
    }
}

impl MemberCompressor {
    fn new(level: u32) -> io::Result<Self> {
        // A bad level fails here, not in a worker later.
        Deflater::new(level)?;
        Ok(MemberCompressor {
            level,
            context: None,
            scratch: Vec::new(),
        })
    }

    /// The header's XFL byte, RFC 1952's hint of the level: 2 at the slowest, 4 at the fastest.
    fn extra_flags(&self) -> u8 {
        match self.level {
            9 => 2,
            1 => 4,
            _ => 0,
        }
    }

    fn compress(&mut self, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        let extra_flags = self.extra_flags();
        let context = match &mut self.context {
            Some(context) => context,
            None => self.context.insert(Deflater::new(self.level)?),
        };
        let bound = context.bound(plaintext.len());
        self.scratch
            .resize(SIZED_MEMBER_HEADER + bound + GZIP_TRAILER, 0);
        let deflated = context.deflate(
            plaintext,
            &mut self.scratch[SIZED_MEMBER_HEADER..SIZED_MEMBER_HEADER + bound],
        )?;
        let member_len = SIZED_MEMBER_HEADER + deflated + GZIP_TRAILER;
        let (Ok(member_size), Ok(plaintext_size)) =
            (u32::try_from(member_len), u32::try_from(plaintext.len()))
        else {
            return Err(io::Error::other(
                "a gzip member is too large for its header",
            ));
        };
        let header = &mut self.scratch[..SIZED_MEMBER_HEADER];
        header.copy_from_slice(&END_MEMBER[..SIZED_MEMBER_HEADER]);
        header[8] = extra_flags;
        header[16..].copy_from_slice(&member_size.to_le_bytes());
        let trailer = SIZED_MEMBER_HEADER + deflated;
        self.scratch[trailer..trailer + 4]
            .copy_from_slice(&libdeflater::crc32(plaintext).to_le_bytes());
        self.scratch[trailer + 4..member_len].copy_from_slice(&plaintext_size.to_le_bytes());
        Ok(self.scratch[..member_len].to_vec())
    }
}

/// Plaintext bytes per gzip member. Each member starts without the previous one's history,
/// which costs deflate a little ratio at every start; half a MiB keeps that loss small while a
/// few members in flight per core stay within a few MiB.
pub const MEMBER_INPUT_SIZE: usize = 512 * 1024;
/// Largest member (whole, header to trailer) and largest member plaintext a restore accepts:
/// the bound on what one member costs in memory. tusk writes members of at most
/// [`MEMBER_INPUT_SIZE`] plaintext, and deflate grows incompressible data by well under 1%.
pub const MAX_MEMBER_SIZE: usize = 4 * MEMBER_INPUT_SIZE;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Length of the header of a member that carries its size: the fixed gzip header (10 bytes),
/// XLEN (2), and one extra subfield of 8 bytes, `'I' 'G' 04 00 <member size, u32 LE>`.
pub const SIZED_MEMBER_HEADER: usize = 20;
/// gzip trailer: CRC-32 and length of the member's plaintext, both u32 LE.
const GZIP_TRAILER: usize = 8;
/// Smallest possible member: a header, the two-byte empty deflate block, a trailer.
const MIN_MEMBER_SIZE: usize = SIZED_MEMBER_HEADER + 2 + GZIP_TRAILER;
/// The member that ends every stream of sized members: it carries no plaintext, so any gzip
/// reader skips it, and a stream cut short exactly between two members lacks it.
pub const END_MEMBER: [u8; MIN_MEMBER_SIZE] = [
    0x1f,
    0x8b,
    0x08,
    0x04,
    0,
    0,
    0,
    0,
    0,
    0xff, // gzip, deflate, FEXTRA; no time; unknown OS
    8,
    0,
    b'I',
    b'G',
    4,
    0,
    MIN_MEMBER_SIZE as u8,
    0,
    0,
    0, // XLEN 8; IG, 4 bytes: 30
    0x03,
    0x00, // an empty final deflate block
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0, // CRC-32 of nothing, length 0
];

/// The size a member header announces (the whole member, header and trailer included), or
/// `None` when the header is not one of a member that carries its size: gzip, deflate, the
/// FEXTRA flag alone, and one subfield `IG` of four bytes.
pub fn sized_member_len(header: &[u8]) -> Option<usize> {
    let header: &[u8; SIZED_MEMBER_HEADER] = header.get(..SIZED_MEMBER_HEADER)?.try_into().ok()?;
    let fixed = header[..4] == [0x1f, 0x8b, 0x08, 0x04];
    let extra = header[10..16] == [8, 0, b'I', b'G', 4, 0];
    let size = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    (fixed && extra).then_some(size as usize)
}

/// Plaintext bytes per zstd frame, as for gzip members. zstd's window is larger than a frame,
/// so each frame's fresh start costs more than a gzip member's: on a realistic 1 GB tar, 512 KiB
/// frames stored 3.3% more than one stream at level 3, 2 MiB frames 0.9%. But a zstd backup
/// holds about five frames while its upload waits, and 2 MiB frames took its peak RSS on S3 from
/// about 62 to 70-76 MiB, past the 64 MiB bound. So frames stay at 512 KiB.
pub const FRAME_INPUT_SIZE: usize = MEMBER_INPUT_SIZE;
/// Largest frame (compressed, header to checksum) and largest frame content size a restore
/// accepts: the bound on what one frame costs in memory.
pub const MAX_FRAME_SIZE: usize = 4 * FRAME_INPUT_SIZE;

/// The skippable-frame magic number of tusk's markers (zstd reserves 0x184D2A50-0x184D2A5F for
/// frames every decoder skips), little-endian.
const MARKER_MAGIC: [u8; 4] = [0x5e, 0x2a, 0x4d, 0x18];
/// The skippable frame that starts a stream of independent frames: magic, length 8, `tuskzstd`.
pub const ZSTD_START_FRAME: [u8; 16] = [
    0x5e, 0x2a, 0x4d, 0x18, 8, 0, 0, 0, b't', b'u', b's', b'k', b'z', b's', b't', b'd',
];
/// The skippable frame that ends it: magic, length 8, `tuskend.`. A stream cut short exactly
/// between two frames lacks it.
pub const ZSTD_END_FRAME: [u8; 16] = [
    0x5e, 0x2a, 0x4d, 0x18, 8, 0, 0, 0, b't', b'u', b's', b'k', b'e', b'n', b'd', b'.',
];
/// A zstd block is at most 128 KiB (RFC 8878, Block_Maximum_Size).
const MAX_BLOCK_SIZE: usize = 128 * 1024;

/// One worker's zstd context, made on its first frame: a context is not shared between threads,
/// so each clone of the stage's work starts without one.
struct FrameCompressor {
    level: i32,
    context: Option<zstd::bulk::Compressor<'static>>,
    /// Room for the largest frame, reused: compressing straight into a fresh vector would
    /// leave each frame holding the worst case's room, and every frame in flight costing it.
    scratch: Vec<u8>,
}

impl Clone for FrameCompressor {
    fn clone(&self) -> Self {
        FrameCompressor {
            level: self.level,
            context: None,
            scratch: Vec::new(),
        }
    }
}

impl FrameCompressor {
    fn new(level: i32) -> io::Result<Self> {
        // A bad level fails here, not in a worker later.
        zstd::bulk::Compressor::new(level)?;
        Ok(FrameCompressor {
            level,
            context: None,
            scratch: Vec::new(),
        })
    }

    fn compress(&mut self, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        let context = match &mut self.context {
            Some(context) => context,
            None => {
                let mut context = zstd::bulk::Compressor::new(self.level)?;
                context.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                context.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
                self.context.insert(context)
            }
        };
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(plaintext.len()));
        context.compress_to_buffer(plaintext, &mut self.scratch)?;
        Ok(self.scratch.clone())
    }
}

/// One zstd frame cut from the stream, with its position for error messages.
struct Frame {
    index: u64,
    bytes: Vec<u8>,
    content_size: usize,
}

/// Reads exactly `len` bytes onto `bytes`; `what` names the place for the error of a stream
/// that ends first.
fn read_frame_part(
    inner: &mut impl Read,
    len: usize,
    bytes: &mut Vec<u8>,
    what: impl FnOnce() -> String,
) -> io::Result<()> {
    if read_at_most(inner, len, bytes)? < len {
        return Err(invalid(format!("the zstd stream ends inside {}", what())));
    }
    Ok(())
}

/// Cuts the next frame out of a stream of independent frames by walking its header and block
/// headers (RFC 8878), without decompressing. `Ok(None)` only at [`ZSTD_END_FRAME`] with nothing
/// after it.
fn cut_frame(inner: &mut impl Read, index: u64) -> io::Result<Option<Frame>> {
    let mut bytes = Vec::with_capacity(MAX_BLOCK_SIZE);
    match read_at_most(inner, 4, &mut bytes)? {
        0 => {
            let place = match index {
                0 => "its start marker".to_owned(),
                _ => format!("frame {}", index - 1),
            };
            return Err(invalid(format!(
                "the zstd stream ends after {place} without its end marker: it was cut short"
            )));
        }
        4 => {}
        _ => {
            return Err(invalid(format!(
                "the zstd stream ends inside the header of frame {index}"
            )));
        }
    }
    if bytes == MARKER_MAGIC {
        read_frame_part(inner, ZSTD_END_FRAME.len() - 4, &mut bytes, || {
            format!("the marker after frame {}", index.saturating_sub(1))
        })?;
        if bytes != ZSTD_END_FRAME {
            return Err(invalid(format!(
                "frame {index} is a marker but not the end marker"
            )));
        }
        if read_at_most(inner, 1, &mut Vec::new())? != 0 {
            return Err(invalid(
                "data follows the zstd stream's end marker".to_owned(),
            ));
        }
        return Ok(None);
    }
    if bytes != ZSTD_MAGIC {
        return Err(invalid(format!("frame {index} is not a zstd frame")));
    }
    // Frame header descriptor: content size flag (2 bits), single segment, unused, reserved,
    // checksum flag, dictionary id flag (2 bits).
    read_frame_part(inner, 1, &mut bytes, || {
        format!("the header of frame {index}")
    })?;
    let descriptor = bytes[4];
    let single_segment = descriptor & 0x20 != 0;
    let has_checksum = descriptor & 0x04 != 0;
    let content_size_len = match descriptor >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    if descriptor & 0x08 != 0 || descriptor & 0x03 != 0 || content_size_len == 0 {
        return Err(invalid(format!(
            "zstd frame {index} does not state its content size like the frames before it"
        )));
    }
    let window_len = usize::from(!single_segment);
    read_frame_part(inner, window_len + content_size_len, &mut bytes, || {
        format!("the header of frame {index}")
    })?;
    let mut size_bytes = [0u8; 8];
    size_bytes[..content_size_len].copy_from_slice(&bytes[5 + window_len..]);
    let mut content_size = u64::from_le_bytes(size_bytes);
    if content_size_len == 2 {
        content_size += 256;
    }
    if content_size > MAX_FRAME_SIZE as u64 {
        return Err(invalid(format!(
            "zstd frame {index} announces {content_size} bytes of content, more than {MAX_FRAME_SIZE}"
        )));
    }
    loop {
        let start = bytes.len();
        read_frame_part(inner, 3, &mut bytes, || format!("frame {index}"))?;
        let header = u32::from_le_bytes([bytes[start], bytes[start + 1], bytes[start + 2], 0]);
        let last = header & 1 != 0;
        let block_size = (header >> 3) as usize;
        let stored = match (header >> 1) & 3 {
            // Raw and compressed blocks store block_size bytes, RLE blocks one.
            0 | 2 => block_size,
            1 => 1,
            _ => {
                return Err(invalid(format!(
                    "zstd frame {index} has a block of the reserved type"
                )));
            }
        };
        if block_size > MAX_BLOCK_SIZE || bytes.len() + stored > MAX_FRAME_SIZE {
            return Err(invalid(format!(
                "zstd frame {index} is longer than {MAX_FRAME_SIZE} bytes or has an oversized block"
            )));
        }
        read_frame_part(inner, stored, &mut bytes, || format!("frame {index}"))?;
        if last {
            break;
        }
    }
    if has_checksum {
        read_frame_part(inner, 4, &mut bytes, || format!("frame {index}"))?;
    }
    Ok(Some(Frame {
        index,
        bytes,
        content_size: content_size as usize,
    }))
}

/// Decompresses one frame, which must give exactly its stated content size (zstd also checks
/// the frame's checksum when it has one).
fn decompress_frame(frame: Frame) -> io::Result<Vec<u8>> {
    let Frame {
        index,
        bytes,
        content_size,
    } = frame;
    let mut plaintext = Vec::with_capacity(content_size);
    zstd::bulk::Decompressor::new()?
        .decompress_to_buffer(&bytes[..], &mut plaintext)
        .map_err(|error| invalid(format!("zstd frame {index} is corrupt: {error}")))?;
    if plaintext.len() != content_size {
        return Err(invalid(format!(
            "zstd frame {index} does not decompress to the content size it states"
        )));
    }
    Ok(plaintext)
}

/// Decompresses a stream of independent frames (after its start marker) on every core, in
/// order.
fn parallel_zstd_reader<R: Read + Send + 'static>(mut inner: R) -> io::Result<OrderedReader> {
    let mut index = 0;
    let stage = OrderedStage::start(
        "unzstd",
        worker_count(),
        move || {
            let frame = cut_frame(&mut inner, index)?;
            index += 1;
            Ok(frame)
        },
        decompress_frame,
    )?;
    Ok(OrderedReader::new(stage))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads `len` bytes, or fewer when the input ends first, appending them to `buffer`.
fn read_at_most(inner: &mut impl Read, len: usize, buffer: &mut Vec<u8>) -> io::Result<usize> {
    inner.take(len as u64).read_to_end(buffer)
}

/// One gzip member cut from the stream, with its position for error messages.
struct Member {
    index: u64,
    bytes: Vec<u8>,
}

impl Member {
    /// Whether the trailer says the member holds no plaintext.
    fn is_empty(&self) -> bool {
        self.bytes.ends_with(&[0; 4])
    }
}

/// Cuts the next member out of a stream of members that carry their size. `Ok(None)` only when
/// the stream ends right after a member without plaintext (see [`END_MEMBER`]); `last_empty`
/// tells whether the member before was one.
fn cut_member(inner: &mut impl Read, index: u64, last_empty: bool) -> io::Result<Option<Member>> {
    let mut bytes = Vec::with_capacity(SIZED_MEMBER_HEADER);
    match read_at_most(inner, SIZED_MEMBER_HEADER, &mut bytes)? {
        0 if last_empty => return Ok(None),
        0 => {
            return Err(invalid(format!(
                "the gzip stream ends after member {} without its end member: it was cut short",
                index.saturating_sub(1)
            )));
        }
        SIZED_MEMBER_HEADER => {}
        _ => {
            return Err(invalid(format!(
                "the gzip stream ends inside the header of member {index}"
            )));
        }
    }
    let Some(size) = sized_member_len(&bytes) else {
        return Err(invalid(format!(
            "gzip member {index} does not carry its size like the members before it"
        )));
    };
    if !(MIN_MEMBER_SIZE..=MAX_MEMBER_SIZE).contains(&size) {
        return Err(invalid(format!(
            "gzip member {index} announces {size} bytes, outside {MIN_MEMBER_SIZE}-{MAX_MEMBER_SIZE}"
        )));
    }
    bytes.reserve_exact(size - SIZED_MEMBER_HEADER);
    if read_at_most(inner, size - SIZED_MEMBER_HEADER, &mut bytes)? < size - SIZED_MEMBER_HEADER {
        return Err(invalid(format!(
            "the gzip stream ends inside member {index}"
        )));
    }
    Ok(Some(Member { index, bytes }))
}

/// Inflates one member (with libdeflate, which inflates a whole buffer faster than a streaming
/// inflater): it must inflate to exactly the plaintext length of its trailer, with its CRC-32.
/// The members are authenticated by DARE before they get here; these checks catch a writer's
/// mistake or a member cut or spliced in the wrong place.
fn inflate_member(member: Member) -> io::Result<Vec<u8>> {
    let Member { index, bytes } = member;
    let (deflated, trailer) =
        bytes[SIZED_MEMBER_HEADER..].split_at(bytes.len() - SIZED_MEMBER_HEADER - GZIP_TRAILER);
    let expected_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let expected_len =
        u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]) as usize;
    if expected_len > MAX_MEMBER_SIZE {
        return Err(invalid(format!(
            "gzip member {index} announces {expected_len} bytes of plaintext, more than {MAX_MEMBER_SIZE}"
        )));
    }
    let mut plaintext = vec![0; expected_len];
    let inflated = libdeflater::Decompressor::new()
        .deflate_decompress(deflated, &mut plaintext)
        .map_err(|error| match error {
            // More plaintext than the trailer says.
            libdeflater::DecompressionError::InsufficientSpace => invalid(format!(
                "gzip member {index} does not inflate to the length its trailer states"
            )),
            libdeflater::DecompressionError::BadData => invalid(format!(
                "gzip member {index} is corrupt: invalid deflate data"
            )),
        })?;
    if inflated != expected_len {
        return Err(invalid(format!(
            "gzip member {index} does not inflate to the length its trailer states"
        )));
    }
    if libdeflater::crc32(&plaintext) != expected_crc {
        return Err(invalid(format!(
            "gzip member {index} fails its CRC-32 check"
        )));
    }
    Ok(plaintext)
}

/// Inflates a stream of members that carry their size on every core, in order.
fn parallel_gzip_reader<R: Read + Send + 'static>(mut inner: R) -> io::Result<OrderedReader> {
    let mut index = 0;
    let mut last_empty = false;
    let stage = OrderedStage::start(
        "gunzip",
        worker_count(),
        move || {
            let member = cut_member(&mut inner, index, last_empty)?;
            index += 1;
            last_empty = member.as_ref().is_some_and(Member::is_empty);
            Ok(member)
        },
        inflate_member,
    )?;
    Ok(OrderedReader::new(stage))
}

/// Decompresses gzip (every member of a multi-member stream) or zstd, recognised by their magic
/// bytes, so a restore needs no record of how the backup was compressed. A gzip stream whose
/// first member carries its size, or a zstd stream of independent frames (what tusk writes), is
/// decompressed on every core; any other gzip or zstd stream (backups taken before) serially.
pub fn decompressing_reader<R: Read + Send + 'static>(
    mut inner: R,
) -> io::Result<Box<dyn Read + Send>> {
    let mut head = Vec::with_capacity(SIZED_MEMBER_HEADER);
    read_at_most(&mut inner, SIZED_MEMBER_HEADER, &mut head)?;
    let sized_members = sized_member_len(&head).is_some();
    let zstd_frames = head.starts_with(&ZSTD_START_FRAME);
    let gzip = head.starts_with(&GZIP_MAGIC);
    let zstd = head.starts_with(&ZSTD_MAGIC);
    if zstd_frames {
        let after_marker = io::Cursor::new(head[ZSTD_START_FRAME.len()..].to_vec()).chain(inner);
        return Ok(Box::new(parallel_zstd_reader(after_marker)?));
    }
    let whole = io::Cursor::new(head).chain(inner);
    if sized_members {
        Ok(Box::new(parallel_gzip_reader(whole)?))
    } else if gzip {
        let buffered = BufReader::with_capacity(256 * 1024, whole);
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
    } else if zstd {
        let buffered = BufReader::with_capacity(256 * 1024, whole);
        Ok(Box::new(zstd::Decoder::with_buffer(buffered)?))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the decrypted stream is neither gzip nor zstd",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    fn round_trip(compression: Compression) {
        let data = sample();
        let mut writer = CompressWriter::new(compression, Vec::new()).unwrap();
        for chunk in data.chunks(100_000) {
            writer.write_all(chunk).unwrap();
        }
        let compressed = writer.finish().unwrap();
        assert!(compressed.len() < data.len() / 4);
        let mut restored = Vec::new();
        decompressing_reader(io::Cursor::new(compressed))
            .unwrap()
            .read_to_end(&mut restored)
            .unwrap();
        assert!(restored == data);
    }

    #[test]
    fn parallel_gzip_round_trips_and_standard_gzip_reads_it() {
        round_trip(Compression::Gzip { level: 6 });
        let mut writer = CompressWriter::new(Compression::Gzip { level: 1 }, Vec::new()).unwrap();
        writer.write_all(b"hello gzip").unwrap();
        let compressed = writer.finish().unwrap();
        assert_eq!(compressed[8], 4, "XFL: the fastest level");
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&compressed[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello gzip");
    }

    #[test]
    fn zstd_frames_round_trip_and_standard_zstd_reads_them() {
        round_trip(Compression::Zstd { level: 3 });
        let data = sample();
        let stream = zstd_frames(&data);
        assert!(stream.starts_with(&ZSTD_START_FRAME));
        assert!(stream.ends_with(&ZSTD_END_FRAME));
        // Independent frames of FRAME_INPUT_SIZE plaintext, each stating its content size.
        let mut rest = &stream[ZSTD_START_FRAME.len()..];
        let mut sizes = Vec::new();
        while let Some(frame) = cut_frame(&mut rest, sizes.len() as u64).unwrap() {
            sizes.push(frame.content_size);
        }
        assert_eq!(sizes.len(), data.len().div_ceil(FRAME_INPUT_SIZE));
        assert!(
            sizes[..sizes.len() - 1]
                .iter()
                .all(|&size| size == FRAME_INPUT_SIZE)
        );
        // zstd itself skips the markers and reads every frame.
        assert!(zstd::stream::decode_all(&stream[..]).unwrap() == data);
        // An empty tar is the two markers.
        let empty = zstd_frames(&[]);
        assert_eq!(empty.len(), 32);
        assert!(read_all(empty).unwrap().is_empty());
        let error = read_all(ZSTD_START_FRAME.to_vec()).unwrap_err();
        assert!(
            error.to_string().contains("ends after its start marker"),
            "{error}"
        );
    }

    /// A writer that takes `room` bytes, then fails as a broken upload would.
    struct FailingAfter {
        room: usize,
    }

    impl Write for FailingAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::other("the upload broke"));
            }
            let taken = buf.len().min(self.room);
            self.room -= taken;
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_inner_writer_fails_the_stream_instead_of_hanging_it() {
        let data = sample();
        for compression in [
            Compression::Gzip { level: 1 },
            Compression::Zstd { level: 1 },
        ] {
            let mut writer =
                CompressWriter::new(compression, FailingAfter { room: 100_000 }).unwrap();
            // Chunks go on being accepted until the stage is full behind the failed writer;
            // the failure then comes back, from a write or at the latest from finish.
            let result = (0..64)
                .try_for_each(|_| writer.write_all(&data))
                .and_then(|()| writer.finish().map(drop));
            let error = result.unwrap_err();
            assert_eq!(error.to_string(), "the upload broke", "{compression:?}");
        }
    }

    #[test]
    fn every_gzip_level_round_trips_and_no_other_is_taken() {
        // Compressible data, then bytes that do not compress at all (deflate's stored blocks
        // make the member a little longer than its plaintext).
        let mut data = sample()[..700_000].to_vec();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        data.extend((0..700_000).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        }));
        for level in 0..=9 {
            let mut writer = CompressWriter::new(Compression::Gzip { level }, Vec::new()).unwrap();
            writer.write_all(&data).unwrap();
            let stream = writer.finish().unwrap();
            assert!(read_all(stream).unwrap() == data, "level {level}");
        }
        let error = CompressWriter::new(Compression::Gzip { level: 10 }, Vec::new())
            .err()
            .expect("level 10 refused");
        assert!(error.to_string().contains("outside 0-9"), "{error}");
    }

    #[test]
    fn zstd_written_as_one_frame_before_still_decompresses() {
        let data = sample();
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.write_all(&data).unwrap();
        let stream = encoder.finish().unwrap();
        assert!(read_all(stream).unwrap() == data);
    }

    fn zstd_frames(data: &[u8]) -> Vec<u8> {
        let mut writer = CompressWriter::new(Compression::Zstd { level: 1 }, Vec::new()).unwrap();
        for chunk in data.chunks(100_000) {
            writer.write_all(chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn zstd_frames_cut_short_corrupt_oversized_or_foreign_are_refused() {
        let data = sample();
        let stream = zstd_frames(&data);
        let start = ZSTD_START_FRAME.len();
        let frame_len = |at: usize| {
            cut_frame(&mut &stream[at..], 0)
                .unwrap()
                .unwrap()
                .bytes
                .len()
        };
        let first = frame_len(start);
        let second_at = start + first;
        let second = frame_len(second_at);
        let third_at = second_at + second;
        assert!(second > 40, "frame 1 is {second} bytes");

        let mut flipped = stream.clone();
        flipped[second_at + second / 2] ^= 0x10;
        let mut wrong_checksum = stream.clone();
        wrong_checksum[third_at - 1] ^= 0x01;
        let mut oversized = stream.clone();
        let descriptor = stream[second_at + 4];
        assert_eq!(descriptor >> 6, 2, "a four-byte content size");
        let size_at = second_at + 5 + usize::from(descriptor & 0x20 == 0);
        oversized[size_at..size_at + 4].copy_from_slice(&(64u32 << 20).to_le_bytes());
        let mut foreign_after = stream[..third_at].to_vec();
        let mut streaming = zstd::Encoder::new(Vec::new(), 1).unwrap();
        streaming.write_all(b"no content size").unwrap();
        foreign_after.extend(streaming.finish().unwrap());
        let mut after_the_end = stream.clone();
        after_the_end.extend_from_slice(&stream[start..second_at]);
        let mut start_again = stream[..third_at].to_vec();
        start_again.extend_from_slice(&ZSTD_START_FRAME);
        let mut swapped = stream[..start].to_vec();
        swapped.extend_from_slice(&stream[second_at..third_at]);
        swapped.extend_from_slice(&stream[start..second_at]);
        swapped.extend_from_slice(&stream[third_at..]);

        for (what, bytes, expected) in [
            (
                "no end marker",
                stream[..stream.len() - ZSTD_END_FRAME.len()].to_vec(),
                "without its end marker",
            ),
            (
                "cut between frames",
                stream[..third_at].to_vec(),
                "after frame 1 without its end marker",
            ),
            (
                "cut inside a frame",
                stream[..second_at + second / 2].to_vec(),
                "ends inside frame 1",
            ),
            (
                "cut inside a header",
                stream[..second_at + 5].to_vec(),
                "inside the header of frame 1",
            ),
            (
                "cut inside the end marker",
                stream[..stream.len() - 3].to_vec(),
                "inside the marker",
            ),
            ("a flipped byte", flipped, "frame 1"),
            (
                "a wrong checksum",
                wrong_checksum,
                "zstd frame 1 is corrupt",
            ),
            (
                "an oversized frame",
                oversized,
                "frame 1 announces 67108864 bytes",
            ),
            (
                "a frame without its content size",
                foreign_after,
                "frame 2 does not state its content size",
            ),
            (
                "data after the end marker",
                after_the_end,
                "data follows the zstd stream's end marker",
            ),
            (
                "a second start marker",
                start_again,
                "frame 2 is a marker but not the end marker",
            ),
        ] {
            let error = match read_all(bytes) {
                Ok(plaintext) => panic!("{what}: accepted, {} bytes", plaintext.len()),
                Err(error) => error,
            };
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{what}: {error}");
            assert!(error.to_string().contains(expected), "{what}: {error}");
        }
        // Frames are independent, so two swapped frames decompress: the order is DARE's to
        // protect (a package's nonce is its position), and the restore tests check that it does.
        let swapped = read_all(swapped).unwrap();
        assert!(swapped != data && swapped.len() == data.len());
    }

    #[test]
    fn every_member_of_a_multi_member_gzip_is_decoded() {
        let mut stream = Vec::new();
        for part in ["first member, ", "second member"] {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(part.as_bytes()).unwrap();
            stream.extend(encoder.finish().unwrap());
        }
        let mut text = String::new();
        decompressing_reader(io::Cursor::new(stream))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "first member, second member");
    }

    fn read_all(stream: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut plaintext = Vec::new();
        decompressing_reader(io::Cursor::new(stream))?.read_to_end(&mut plaintext)?;
        Ok(plaintext)
    }

    #[test]
    fn sized_members_are_cut_and_inflated_in_order_and_end_with_the_end_member() {
        let data = sample();
        let mut writer = CompressWriter::new(Compression::Gzip { level: 1 }, Vec::new()).unwrap();
        writer.write_all(&data).unwrap();
        let stream = writer.finish().unwrap();
        let first = sized_member_len(&stream).unwrap();
        assert!(first < stream.len() / 4, "several members");
        assert!(stream.ends_with(&END_MEMBER));
        // Each member holds MEMBER_INPUT_SIZE of plaintext (its trailer says so), the last one
        // what is left; then comes the end member.
        let mut rest = &stream[..];
        let mut sizes = Vec::new();
        while let Some(len) = sized_member_len(rest) {
            let trailer = &rest[len - 4..len];
            sizes.push(u32::from_le_bytes(trailer.try_into().unwrap()) as usize);
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        assert_eq!(sizes.pop(), Some(0), "the end member");
        assert_eq!(sizes.len(), data.len().div_ceil(MEMBER_INPUT_SIZE));
        assert!(
            sizes[..sizes.len() - 1]
                .iter()
                .all(|&size| size == MEMBER_INPUT_SIZE)
        );
        assert_eq!(sizes.iter().sum::<usize>(), data.len());
        assert!(read_all(stream).unwrap() == data);
        // The end member alone is the stream of an empty tar.
        assert!(read_all(END_MEMBER.to_vec()).unwrap().is_empty());
    }

    #[test]
    fn sized_members_cut_short_corrupt_or_oversized_are_refused() {
        let data = sample();
        let mut writer = CompressWriter::new(Compression::Gzip { level: 1 }, Vec::new()).unwrap();
        writer.write_all(&data).unwrap();
        let stream = writer.finish().unwrap();
        let first = sized_member_len(&stream).unwrap();
        let second = sized_member_len(&stream[first..]).unwrap();

        let mut flipped = stream.clone();
        flipped[first + 100] ^= 0x10;
        let mut oversized = stream.clone();
        oversized[first + 16..first + 20].copy_from_slice(&(64u32 << 20).to_le_bytes());
        let mut foreign_after = stream[..first + second].to_vec();
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        plain.write_all(b"not sized").unwrap();
        foreign_after.extend(plain.finish().unwrap());
        let mut wrong_crc = stream.clone();
        wrong_crc[first + second - 8] ^= 0x01;
        let mut after_the_end = stream.clone();
        after_the_end.extend_from_slice(&stream[..first]);

        for (what, bytes, expected) in [
            (
                "no end member",
                stream[..stream.len() - END_MEMBER.len()].to_vec(),
                "without its end member",
            ),
            (
                "cut between members",
                stream[..first + second].to_vec(),
                "after member 1 without its end member",
            ),
            (
                "cut inside a member",
                stream[..first + 1000].to_vec(),
                "ends inside member 1",
            ),
            (
                "cut inside a header",
                stream[..first + 7].to_vec(),
                "inside the header of member 1",
            ),
            ("a flipped byte", flipped, "member 1"),
            (
                "a wrong CRC-32",
                wrong_crc,
                "member 1 fails its CRC-32 check",
            ),
            (
                "an oversized member",
                oversized,
                "member 1 announces 67108864 bytes",
            ),
            (
                "a member without its size",
                foreign_after,
                "member 2 does not carry its size",
            ),
            (
                "a member after the end member",
                after_the_end,
                "without its end member",
            ),
        ] {
            let error = read_all(bytes).expect_err(what);
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{what}: {error}");
            assert!(error.to_string().contains(expected), "{what}: {error}");
        }
    }

    #[test]
    fn settings_are_validated() {
        assert_eq!(
            Compression::from_settings(None, None),
            Ok(Compression::Gzip { level: 6 })
        );
        assert_eq!(
            Compression::from_settings(Some("zstd"), Some("9")),
            Ok(Compression::Zstd { level: 9 })
        );
        assert!(Compression::from_settings(Some("gzip"), Some("12")).is_err());
        assert!(Compression::from_settings(Some("lz4"), None).is_err());
    }

    #[test]
    fn unknown_format_is_refused() {
        let error = decompressing_reader(io::Cursor::new(b"plain text".to_vec()))
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
