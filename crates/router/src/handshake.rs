//! The first bytes of a connection, as pure functions: which way the client starts (an
//! SSLRequest, a GSSENCRequest, a CancelRequest, a plaintext StartupMessage, or a TLS
//! ClientHello sent directly), the server name and ALPN protocols of a ClientHello, and the few
//! messages the router itself sends (the one-byte answers, a PostgreSQL ErrorResponse, a TLS
//! alert).
//!
//! Nothing here does I/O, so every decision can be tested, and fuzzed, from bytes alone.

use std::io::Read;

use tusk_api::tunnel_request;

/// The length of the 8-byte special requests (SSLRequest, GSSENCRequest) and of the shortest
/// message the router classifies.
pub const REQUEST_LENGTH: usize = 8;

/// The request code of an SSLRequest (`1234 5679`).
const SSL_REQUEST_CODE: u32 = 80_877_103;
/// The request code of a GSSENCRequest (`1234 5680`).
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The request code of a CancelRequest (`1234 5678`).
const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// The TLS record content type of a handshake message: the first byte of a ClientHello sent
/// without an SSLRequest before it.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The ALPN protocol a PostgreSQL client offers when it starts TLS directly (PostgreSQL 17).
pub const POSTGRES_ALPN: &[u8] = b"postgresql";

/// The answer to an SSLRequest that accepts it: the client starts its TLS handshake next.
pub const SSL_ACCEPTED: u8 = b'S';
/// The answer to a GSSENCRequest that declines it: the client goes on without (and, for the
/// router, then sends an SSLRequest or gives up).
pub const GSSENC_DECLINED: u8 = b'N';

/// How a connection begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// An SSLRequest: the classic way every libpq starts TLS.
    SslRequest,
    /// A GSSENCRequest, which the router declines.
    GssEncRequest,
    /// A CancelRequest in plaintext. A cancel must travel inside TLS to be routed.
    CancelRequest,
    /// A StartupMessage (or anything else framed like a PostgreSQL message) in plaintext.
    Plaintext,
    /// A TLS record: a ClientHello sent directly (`sslnegotiation=direct`).
    DirectTls,
    /// A TunnelRequest from `tusk tunnel` (`tusk_api::tunnel_request`), whole; or, when its
    /// length is out of bounds, its 8-byte header, which does not decode.
    TunnelRequest,
}

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classified {
    /// Too few bytes to tell yet.
    NeedMore,
    /// The opening, and how many bytes it takes (8 for the special requests, the whole
    /// message for a TunnelRequest, 0 for a TLS record, which is read as a whole by
    /// [`client_hello`]).
    Opening(Opening, usize),
}

/// Classifies the first bytes of a connection.
pub fn classify(bytes: &[u8]) -> Classified {
    let Some(&first) = bytes.first() else {
        return Classified::NeedMore;
    };
    if first == TLS_HANDSHAKE_RECORD {
        return Classified::Opening(Opening::DirectTls, 0);
    }
    if bytes.len() < REQUEST_LENGTH {
        return Classified::NeedMore;
    }
    let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let code = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if code == tunnel_request::REQUEST_CODE {
        let whole = usize::try_from(length)
            .ok()
            .filter(|length| (REQUEST_LENGTH + 1..=tunnel_request::MAX_LENGTH).contains(length));
        return match whole {
            Some(length) if bytes.len() < length => Classified::NeedMore,
            Some(length) => Classified::Opening(Opening::TunnelRequest, length),
            None => Classified::Opening(Opening::TunnelRequest, REQUEST_LENGTH),
        };
    }
    let opening = match (length, code) {
        (8, SSL_REQUEST_CODE) => Opening::SslRequest,
        (8, GSSENC_REQUEST_CODE) => Opening::GssEncRequest,
        (16, CANCEL_REQUEST_CODE) => Opening::CancelRequest,
        _ => Opening::Plaintext,
    };
    let used = match opening {
        Opening::SslRequest | Opening::GssEncRequest => REQUEST_LENGTH,
        _ => 0,
    };
    Classified::Opening(opening, used)
}

/// What a ClientHello says that routing needs. Never its other contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The server name (SNI), lowercase, when the client sent one.
    pub server_name: Option<String>,
    /// Whether the client offers ALPN `postgresql`.
    pub offers_postgres_alpn: bool,
}

/// The outcome of reading a ClientHello from the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloParse {
    /// The ClientHello is not complete yet.
    NeedMore,
    /// A whole ClientHello.
    Hello(Hello),
    /// Not a ClientHello a TLS server would accept.
    Invalid,
}

/// Reads the ClientHello at the start of `bytes` (TLS records, as the client sent them).
///
/// The caller bounds how many bytes it collects; this function only looks at them.
pub fn client_hello(bytes: &[u8]) -> HelloParse {
    // rustls' Acceptor reads the first handshake message and stops: it holds no key and never
    // answers. A fresh one per call keeps this a function of `bytes` alone.
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest as &mut dyn Read) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return HelloParse::Invalid,
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return HelloParse::Hello(Hello {
                    server_name: hello.server_name().map(str::to_ascii_lowercase),
                    offers_postgres_alpn: hello
                        .alpn()
                        .is_some_and(|mut protocols| protocols.any(|p| p == POSTGRES_ALPN)),
                });
            }
            Err(_) => return HelloParse::Invalid,
        }
    }
    HelloParse::NeedMore
}

/// A PostgreSQL ErrorResponse with severity FATAL, SQLSTATE `08004` (the server rejected the
/// connection) and `message`, as a server sends it before the startup completes.
pub fn error_response(message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "08004"),
        (b'M', message),
    ] {
        fields.push(code);
        // A NUL would end the field early; the router's messages have none.
        fields.extend(value.bytes().filter(|b| *b != 0));
        fields.push(0);
    }
    fields.push(0);
    let mut message = Vec::with_capacity(fields.len() + 5);
    message.push(b'E');
    message.extend(((fields.len() + 4) as u32).to_be_bytes());
    message.extend(fields);
    message
}

/// The TLS alerts the router ends a refused TLS connection with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    /// `unrecognized_name` (112): no database by that name is open to this client, or the
    /// client sent no name.
    UnrecognizedName,
    /// `no_application_protocol` (120): a direct TLS client that does not offer `postgresql`.
    NoApplicationProtocol,
    /// `handshake_failure` (40): a ClientHello the router cannot read.
    HandshakeFailure,
    /// `internal_error` (80): the database could not be reached.
    InternalError,
}

/// A fatal TLS alert record in plaintext, as a server sends it before the handshake.
pub fn tls_alert(alert: Alert) -> [u8; 7] {
    let description = match alert {
        Alert::UnrecognizedName => 112,
        Alert::NoApplicationProtocol => 120,
        Alert::HandshakeFailure => 40,
        Alert::InternalError => 80,
    };
    // Record type alert (21), TLS 1.2 record version, length 2, level fatal (2).
    [21, 3, 3, 0, 2, 2, description]
}

/// The message a client gets when it does not start TLS.
pub const PLAINTEXT_MESSAGE: &str = "this endpoint only accepts TLS connections routed by name: \
     connect with sslmode=verify-full and the database's host name (libpq 14 and later send it)";
/// The message a client gets for a CancelRequest sent without TLS.
pub const CANCEL_MESSAGE: &str = "a cancel request must be sent over TLS to the database's host \
     name (sslmode=verify-full); plaintext cancel requests cannot be routed";
/// The message a client gets when it sends bytes after its SSLRequest before the answer.
pub const PIPELINED_MESSAGE: &str = "bytes were sent after the SSLRequest before the server \
     answered it; wait for the answer before starting TLS";

#[cfg(test)]
mod tests {
    use super::*;

    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

    /// A ClientHello as rustls' client writes it, for `server_name` and `alpn`.
    fn hello_bytes(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_special_requests_are_told_apart() {
        assert_eq!(
            classify(&SSL_REQUEST),
            Classified::Opening(Opening::SslRequest, 8)
        );
        assert_eq!(
            classify(&GSSENC_REQUEST),
            Classified::Opening(Opening::GssEncRequest, 8)
        );
        let cancel = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(
            classify(&cancel),
            Classified::Opening(Opening::CancelRequest, 0)
        );
        // A StartupMessage for protocol 3.0.
        let startup = [0, 0, 0, 9, 0, 3, 0, 0, 0];
        assert_eq!(
            classify(&startup),
            Classified::Opening(Opening::Plaintext, 0)
        );
        assert_eq!(
            classify(&[0x16, 3, 1]),
            Classified::Opening(Opening::DirectTls, 0)
        );
        assert_eq!(classify(&SSL_REQUEST[..5]), Classified::NeedMore);
        assert_eq!(classify(&[]), Classified::NeedMore);
    }

    #[test]
    fn a_tunnel_request_is_read_whole_and_an_unbounded_one_is_not_waited_for() {
        let token = "ab".repeat(32);
        let request = tunnel_request::encode("elephant.shop.db.example.com", &token).unwrap();
        let mut bytes = request.clone();
        bytes.extend_from_slice(&SSL_REQUEST);
        assert_eq!(
            classify(&bytes),
            Classified::Opening(Opening::TunnelRequest, request.len())
        );
        assert_eq!(classify(&request[..20]), Classified::NeedMore);
        // A length beyond the bound is not read on: its header alone, which does not decode.
        let mut huge = request.clone();
        huge[..4].copy_from_slice(&100_000u32.to_be_bytes());
        assert_eq!(
            classify(&huge),
            Classified::Opening(Opening::TunnelRequest, REQUEST_LENGTH)
        );
        assert!(tunnel_request::decode(&huge[..REQUEST_LENGTH]).is_none());
    }

    #[test]
    fn a_client_hello_gives_its_name_and_alpn() {
        let bytes = hello_bytes("Elephant.Shop.db.example.com", &[b"postgresql"]);
        assert_eq!(
            client_hello(&bytes),
            HelloParse::Hello(Hello {
                server_name: Some("elephant.shop.db.example.com".to_owned()),
                offers_postgres_alpn: true,
            })
        );
        let without_alpn = hello_bytes("elephant.shop.db.example.com", &[b"h2"]);
        assert_eq!(
            client_hello(&without_alpn),
            HelloParse::Hello(Hello {
                server_name: Some("elephant.shop.db.example.com".to_owned()),
                offers_postgres_alpn: false,
            })
        );
    }

    #[test]
    fn a_client_hello_without_a_name_has_none() {
        // rustls sends no SNI for an address.
        let bytes = hello_bytes("10.0.0.7", &[]);
        assert_eq!(
            client_hello(&bytes),
            HelloParse::Hello(Hello {
                server_name: None,
                offers_postgres_alpn: false,
            })
        );
    }

    #[test]
    fn a_partial_client_hello_needs_more_and_garbage_is_invalid() {
        let bytes = hello_bytes("elephant.shop.db.example.com", &[]);
        for cut in [1, 5, 6, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(client_hello(&bytes[..cut]), HelloParse::NeedMore, "{cut}");
        }
        assert_eq!(
            client_hello(&[0x16, 3, 1, 0, 4, 9, 9, 9, 9]),
            HelloParse::Invalid
        );
        assert_eq!(client_hello(&SSL_REQUEST), HelloParse::Invalid);
    }

    #[test]
    fn the_error_response_is_a_well_formed_fatal_message() {
        let message = error_response("use TLS");
        assert_eq!(message[0], b'E');
        let length = u32::from_be_bytes(message[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, message.len() - 1);
        let body = String::from_utf8_lossy(&message[5..]);
        assert_eq!(body, "SFATAL\0VFATAL\0C08004\0Muse TLS\0\0");
    }

    proptest::proptest! {
        /// Whatever a client sends, the parser answers and never panics; a ClientHello with
        /// bytes flipped is read or refused, never taken for another name.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = classify(&bytes);
            let _ = client_hello(&bytes);
        }

        #[test]
        fn a_damaged_client_hello_is_refused_or_read(index in 0usize..4096, byte in proptest::num::u8::ANY) {
            let mut bytes = hello_bytes("elephant.shop.db.example.com", &[b"postgresql"]);
            let index = index % bytes.len();
            bytes[index] = byte;
            if let HelloParse::Hello(hello) = client_hello(&bytes)
                && let Some(name) = hello.server_name
            {
                // A flipped byte in the name itself gives another name, which must then be
                // what the bytes say, and routing goes by it.
                proptest::prop_assert!(bytes.windows(name.len()).any(|w| w.eq_ignore_ascii_case(name.as_bytes())));
            }
        }
    }

    #[test]
    fn alerts_are_fatal_records() {
        assert_eq!(tls_alert(Alert::UnrecognizedName), [21, 3, 3, 0, 2, 2, 112]);
        assert_eq!(tls_alert(Alert::NoApplicationProtocol)[6], 120);
    }
}
