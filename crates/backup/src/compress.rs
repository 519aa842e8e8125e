//! Compression stage: gzip compressed in parallel across cores (pigz-style, with gzp) or zstd,
//! and the matching decompression for restore.

use std::io::{self, BufRead, BufReader, Read, Write};

use gzp::ZWriter;
use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};

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

/// A compressing writer whose `finish` flushes the trailer and hands the inner writer back.
pub enum CompressWriter<W: Write + Send + 'static> {
    /// Parallel gzip: blocks are compressed on a pool of threads and written in order.
    Gzip(ParCompress<'static, Gzip, W>),
    /// zstd, on the calling thread.
    Zstd(zstd::Encoder<'static, W>),
}

/// The number of compression threads: every core, as pigz does.
fn compression_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |count| count.get())
}

fn gzp_error(error: gzp::GzpError) -> io::Error {
    match error {
        gzp::GzpError::Io(error) => error,
        other => io::Error::other(other),
    }
}

impl<W: Write + Send + 'static> CompressWriter<W> {
    /// Starts compressing into `inner`.
    pub fn new(compression: Compression, inner: W) -> io::Result<Self> {
        match compression {
            Compression::Gzip { level } => {
                let writer = ParCompressBuilder::<Gzip>::new()
                    .num_threads(compression_threads())
                    .map_err(gzp_error)?
                    .compression_level(gzp::Compression::new(level))
                    .from_writer(inner);
                Ok(CompressWriter::Gzip(writer))
            }
            Compression::Zstd { level } => {
                Ok(CompressWriter::Zstd(zstd::Encoder::new(inner, level)?))
            }
        }
    }

    /// Writes the end of the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            CompressWriter::Gzip(mut writer) => writer.finish().map_err(gzp_error),
            CompressWriter::Zstd(writer) => writer.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressWriter::Gzip(writer) => writer.write(buf),
            CompressWriter::Zstd(writer) => writer.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressWriter::Gzip(writer) => writer.flush(),
            CompressWriter::Zstd(writer) => writer.flush(),
        }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decompresses gzip (every member of a multi-member stream) or zstd, recognised by their magic
/// bytes, so a restore needs no record of how the backup was compressed.
pub fn decompressing_reader<R: Read + Send + 'static>(
    inner: R,
) -> io::Result<Box<dyn Read + Send>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, inner);
    let head = buffered.fill_buf()?;
    if head.starts_with(&GZIP_MAGIC) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
    } else if head.len() >= ZSTD_MAGIC.len() && head.starts_with(&ZSTD_MAGIC) {
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
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&compressed[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello gzip");
    }

    #[test]
    fn zstd_round_trips() {
        round_trip(Compression::Zstd { level: 3 });
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
