//! SPDY/3.1 framing, as far as a port-forward server needs it.
//!
//! kubectl's port-forward speaks SPDY/3.1 (the framing of moby/spdystream), tunnelled through a
//! WebSocket (`SPDY/3.1+portforward.k8s.io`) or after an HTTP upgrade to `SPDY/3.1`. The format
//! is the one of the SPDY/3.1 draft (<https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1/>):
//! eight-byte frame headers; control frames carry a type, DATA frames a stream id; header blocks
//! are zlib streams primed with the draft's dictionary, one stream per direction for the whole
//! session, each block ending in a sync flush. Flow control (WINDOW_UPDATE) is not enforced,
//! as spdystream enforces none.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Frames kubectl sends, decoded; what the server needs of them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A new stream the client opens, with its (lower-case) headers.
    SynStream {
        stream_id: u32,
        headers: Vec<(String, String)>,
        fin: bool,
    },
    /// Bytes on a stream; `fin` ends the client's side of it.
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// The client abandons a stream.
    RstStream { stream_id: u32 },
    /// A liveness check, to be echoed.
    Ping { id: u32 },
    /// The client ends the session.
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS and SYN_REPLY: nothing for this server to do.
    Ignored,
}

/// What makes a session unusable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpdyError {
    /// A frame that does not follow the format.
    #[error("invalid SPDY frame: {0}")]
    Invalid(&'static str),
    /// The header block's zlib stream is corrupt.
    #[error("invalid SPDY header block: {0}")]
    Compression(String),
}

const CONTROL_BIT: u8 = 0x80;
const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// A client's header block bigger than this is refused, as no port-forward needs one.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Splits the byte stream of a session into frames and inflates their header blocks.
pub(crate) struct FrameReader {
    buffer: Vec<u8>,
    inflate: Decompress,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self {
            buffer: Vec::new(),
            inflate: Decompress::new(true),
        }
    }
}

impl FrameReader {
    /// Adds bytes received from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if all of it has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buffer.len() < 8 {
            return Ok(None);
        }
        let length =
            u32::from_be_bytes([0, self.buffer[5], self.buffer[6], self.buffer[7]]) as usize;
        if self.buffer.len() < 8 + length {
            return Ok(None);
        }
        let header: [u8; 8] = self.buffer[..8].try_into().unwrap_or_default();
        let payload: Vec<u8> = self.buffer.drain(..8 + length).skip(8).collect();
        let flags = header[4];
        if header[0] & CONTROL_BIT == 0 {
            let stream_id = u32::from_be_bytes(header[..4].try_into().unwrap_or_default());
            return Ok(Some(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([header[0] & !CONTROL_BIT, header[1]]);
        if version != VERSION {
            return Err(SpdyError::Invalid("unsupported version"));
        }
        let frame_type = u16::from_be_bytes([header[2], header[3]]);
        let word = |index: usize| -> Result<u32, SpdyError> {
            payload
                .get(index * 4..index * 4 + 4)
                .map(|bytes| u32::from_be_bytes(bytes.try_into().unwrap_or_default()))
                .ok_or(SpdyError::Invalid("control frame too short"))
        };
        Ok(Some(match frame_type {
            TYPE_SYN_STREAM => {
                let stream_id = word(0)? & 0x7fff_ffff;
                // Stream id, associated stream id, then priority and slot: ten bytes.
                let block = payload
                    .get(10..)
                    .ok_or(SpdyError::Invalid("SYN_STREAM too short"))?;
                let headers = parse_headers(&self.inflate_block(block)?)?;
                Frame::SynStream {
                    stream_id,
                    headers,
                    fin: flags & FLAG_FIN != 0,
                }
            }
            TYPE_SYN_REPLY | 8 => {
                // The client's header blocks share the zlib stream: inflate to stay in step.
                if let Some(block) = payload.get(4..) {
                    self.inflate_block(block)?;
                }
                Frame::Ignored
            }
            TYPE_RST_STREAM => Frame::RstStream {
                stream_id: word(0)? & 0x7fff_ffff,
            },
            TYPE_PING => Frame::Ping { id: word(0)? },
            TYPE_GOAWAY => Frame::GoAway,
            _ => Frame::Ignored,
        }))
    }

    /// Inflates one header block: the continuation of the session's zlib stream, primed with
    /// the SPDY dictionary when the stream asks for it.
    fn inflate_block(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Invalid("header block too large"));
            }
            let before = self.inflate.total_in();
            let produced = out.len();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.inflate.total_in() - before).unwrap_or(0);
            input = &input[consumed.min(input.len())..];
            match result {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if consumed == 0 && out.len() == produced && out.len() < out.capacity() {
                        return Err(SpdyError::Invalid("header block does not inflate"));
                    }
                }
                Err(error) if error.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(HEADER_DICTIONARY)
                        .map_err(|error| SpdyError::Compression(error.to_string()))?;
                }
                Err(error) => return Err(SpdyError::Compression(error.to_string())),
            }
        }
    }
}

/// A header block: a count, then each name and value with its length, all big-endian u32s.
fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut cursor = Cursor(block);
    let count = cursor.length()?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name_length = cursor.length()?;
        let name = String::from_utf8_lossy(cursor.take(name_length)?).to_ascii_lowercase();
        let value_length = cursor.length()?;
        let value = String::from_utf8_lossy(cursor.take(value_length)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// Reads a header block front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SpdyError> {
        if self.0.len() < n {
            return Err(SpdyError::Invalid("header block too short"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn length(&mut self) -> Result<usize, SpdyError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().unwrap_or_default()) as usize)
    }
}

/// Encodes the server's frames, deflating its header blocks.
pub(crate) struct FrameWriter {
    deflate: Compress,
}

impl Default for FrameWriter {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::best(), true);
        // Set before the first block, so the stream's header names the dictionary.
        let _ = deflate.set_dictionary(HEADER_DICTIONARY);
        Self { deflate }
    }
}

impl FrameWriter {
    /// Accepts a stream the client opened, with no headers (as the kubelet replies).
    pub fn syn_reply(&mut self, stream_id: u32) -> Result<Vec<u8>, SpdyError> {
        let block = self.deflate_block(&0u32.to_be_bytes())?;
        let mut payload = stream_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&block);
        Ok(control(TYPE_SYN_REPLY, 0, &payload))
    }

    fn deflate_block(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|error| SpdyError::Compression(error.to_string()))?;
            let consumed = usize::try_from(self.deflate.total_in() - before).unwrap_or(0);
            input = &input[consumed.min(input.len())..];
            // A sync flush is complete once the output buffer is not filled to the brim.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// A DATA frame; `data` must fit its 24-bit length.
pub(crate) fn data(stream_id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + data.len());
    frame.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    frame.push(if fin { FLAG_FIN } else { 0 });
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(data);
    frame
}

/// The answer to a client's PING: the same id.
pub(crate) fn ping(id: u32) -> Vec<u8> {
    control(TYPE_PING, 0, &id.to_be_bytes())
}

fn control(frame_type: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(VERSION | 0x8000).to_be_bytes());
    frame.extend_from_slice(&frame_type.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

/// The zlib dictionary of SPDY/3 header blocks, from the draft (section 2.6.10.1): common
/// header names and values, each with a four-byte length, then a run of status codes, dates
/// and media types.
pub(super) const HEADER_DICTIONARY: &[u8] = b"\
    \0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\0\0\0\x05trac\
    e\0\0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\0\0\0\x0faccept-langu\
    age\0\0\0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\0\0\0\x0dauthorization\0\0\0\x0dc\
    ache-control\0\0\0\x0aconnection\0\0\0\x0ccontent-base\0\0\0\x10content-encoding\0\0\0\
    \x10content-language\0\0\0\x0econtent-length\0\0\0\x10content-location\0\0\0\x0bcontent-\
    md5\0\0\0\x0dcontent-range\0\0\0\x0ccontent-type\0\0\0\x04date\0\0\0\x04etag\0\0\0\x06ex\
    pect\0\0\0\x07expires\0\0\0\x04from\0\0\0\x04host\0\0\0\x08if-match\0\0\0\x11if-modified\
    -since\0\0\0\x0dif-none-match\0\0\0\x08if-range\0\0\0\x13if-unmodified-since\0\0\0\x0dla\
    st-modified\0\0\0\x08location\0\0\0\x0cmax-forwards\0\0\0\x06pragma\0\0\0\x12proxy-authe\
    nticate\0\0\0\x13proxy-authorization\0\0\0\x05range\0\0\0\x07referer\0\0\0\x0bretry-afte\
    r\0\0\0\x06server\0\0\0\x02te\0\0\0\x07trailer\0\0\0\x11transfer-encoding\0\0\0\x07upgra\
    de\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\0\x03via\0\0\0\x07warning\0\0\0\x10www-authenti\
    cate\0\0\0\x06method\0\0\0\x03get\0\0\0\x06status\0\0\0\x06200 OK\0\0\0\x07version\0\0\0\
    \x08HTTP/1.1\0\0\0\x03url\0\0\0\x06public\0\0\0\x0aset-cookie\0\0\0\x0akeep-alive\0\0\0\
    \x06origin100101201202205206300302303304305306307402405406407408409410411412413414415416\
    417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad \
    Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implem\
    ented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mo\
    n, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,appl\
    ication/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,d\
    eflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn syn_stream(stream_id: u32, block: &[u8]) -> Vec<u8> {
        let mut payload = stream_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(block);
        control(TYPE_SYN_STREAM, 0, &payload)
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// Two header blocks as another zlib (Python's, level 9 with the SPDY dictionary and a
    /// sync flush after each, as Go's spdy framer writes them) deflates kubectl's port-forward
    /// streams: the second block continues the first one's zlib stream.
    #[test]
    fn reads_the_header_blocks_of_a_client_sharing_one_zlib_stream() {
        let first = hex(
            "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c606a626c04a4398b20d198094ade8c0600000000ffff",
        );
        let second = hex("c2aa19540e2512d60b000000ffff");
        let mut reader = FrameReader::default();
        reader.push(&syn_stream(1, &first));
        let split = syn_stream(3, &second);
        reader.push(&split[..5]);
        assert_eq!(
            reader.next_frame().expect("valid"),
            Some(Frame::SynStream {
                stream_id: 1,
                headers: headers(&[
                    ("streamtype", "error"),
                    ("port", "5432"),
                    ("requestid", "0")
                ]),
                fin: false,
            })
        );
        assert_eq!(reader.next_frame().expect("valid"), None, "half a frame");
        reader.push(&split[5..]);
        assert_eq!(
            reader.next_frame().expect("valid"),
            Some(Frame::SynStream {
                stream_id: 3,
                headers: headers(&[("streamtype", "data"), ("port", "5432"), ("requestid", "0")]),
                fin: false,
            })
        );
    }

    #[test]
    fn the_dictionary_is_the_drafts() {
        assert_eq!(HEADER_DICTIONARY.len(), 1423);
        // The dictionary id a zlib stream primed with it carries: its Adler-32.
        let reply = FrameWriter::default().syn_reply(1).expect("deflates");
        assert_eq!(&reply[12..18], &hex("78f9e3c6a7c2"));
    }

    #[test]
    fn replies_inflate_with_the_dictionary_and_data_frames_round_trip() {
        let mut writer = FrameWriter::default();
        let mut reader = FrameReader::default();
        for stream_id in [1, 3] {
            let reply = writer.syn_reply(stream_id).expect("deflates");
            let block = &reply[12..];
            assert_eq!(reader.inflate_block(block).expect("inflates"), vec![0; 4]);
        }
        reader.push(&data(5, true, b"hello"));
        reader.push(&ping(7));
        reader.push(&control(TYPE_GOAWAY, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
        assert_eq!(
            reader.next_frame().expect("valid"),
            Some(Frame::Data {
                stream_id: 5,
                fin: true,
                data: b"hello".to_vec()
            })
        );
        assert_eq!(
            reader.next_frame().expect("valid"),
            Some(Frame::Ping { id: 7 })
        );
        assert_eq!(reader.next_frame().expect("valid"), Some(Frame::GoAway));
    }

    #[test]
    fn a_corrupt_header_block_is_an_error_not_a_panic() {
        let mut reader = FrameReader::default();
        reader.push(&syn_stream(1, &[0x78, 0xf9, 1, 2, 3, 4, 5, 6, 7]));
        assert!(reader.next_frame().is_err());
        let mut reader = FrameReader::default();
        reader.push(&control(TYPE_SYN_STREAM, 0, &[0, 0, 0, 1]));
        assert!(reader.next_frame().is_err());
    }
}
