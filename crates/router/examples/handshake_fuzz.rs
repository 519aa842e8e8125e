//! The fuzz target of the router's handshake parser ([`tusk_router::handshake`]): the special
//! requests (SSLRequest, GSSENCRequest, CancelRequest), plaintext StartupMessages, and TLS
//! ClientHellos with server names and ALPN lists, whole, cut, split over many records and
//! damaged, and bytes of no form at all. It runs for a time budget and stops at the first
//! failure with the smallest input that shows it.
//!
//! Stable Rust has no sanitizers, so this is a structure-aware random search (proptest, with
//! its shrinking) rather than a coverage-guided one: the structure does what coverage would
//! have to discover, since a byte-level mutator rarely finds a well-formed ClientHello.
//!
//! What must hold for every input, beyond not panicking:
//! - a well-formed ClientHello, in one record or split over several, gives exactly its name
//!   (lowercased; none for an address) and whether it offers ALPN `postgresql`;
//! - every cut of it short of its end needs more bytes, and is never read as a ClientHello;
//! - a damaged ClientHello read as one names a server whose name is in the bytes;
//! - an 8-byte SSLRequest or GSSENCRequest is told apart from whatever follows it, and a
//!   first byte of 0x16 is always TLS.
//!
//! Run with `bench/router-fuzz [SECONDS]`, or
//! `cargo run --example handshake_fuzz -- SECONDS [SEED]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use tusk_router::handshake::{Classified, HelloParse, Opening, classify, client_hello};

/// The request codes, as the protocol defines them.
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Protocol 3.0 in a StartupMessage.
const PROTOCOL_3_0: u32 = 196_608;
/// Cases per batch; each batch has its own seed, printed on failure.
const BATCH: u32 = 2_000;

/// One way a ClientHello's bytes are changed.
#[derive(Clone, Debug)]
enum Damage {
    /// Replace the byte at this position (modulo the length).
    Set(usize, u8),
    /// Insert bytes at this position.
    Insert(usize, Vec<u8>),
    /// Remove this many bytes at this position.
    Remove(usize, usize),
    /// Cut the bytes at this position.
    Truncate(usize),
}

/// A ClientHello to write: what the client asks for and how the bytes travel.
#[derive(Clone, Debug)]
struct HelloCase {
    server_name: String,
    alpn: Vec<Vec<u8>>,
    tls12_only: bool,
    /// Split the handshake message over records of at most this many bytes (0: one record).
    fragment: usize,
    /// Changes to the one record's bytes, made before it is split.
    damage: Vec<Damage>,
}

/// What one case sends.
#[derive(Clone, Debug)]
enum Input {
    /// Bytes of no particular form.
    Bytes(Vec<u8>),
    /// A special request with its length and code, then whatever follows.
    Request {
        length: u32,
        code: u32,
        rest: Vec<u8>,
    },
    /// A StartupMessage with these parameters.
    Startup(Vec<(String, String)>),
    /// A ClientHello, possibly after an SSLRequest, as the classic way sends it.
    Hello {
        case: HelloCase,
        after_ssl_request: bool,
    },
}

fn server_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9]{1,30}(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?){0,5}",
        // Long names, near the limit of 253 characters.
        1 => "[a-z]{60}\\.[a-z]{60}\\.[a-z]{60}\\.[a-z]{1,60}",
        // An address: a client sends no SNI for one.
        1 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

fn alpn() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"postgresql".to_vec()),
            Just(b"h2".to_vec()),
            Just(b"postgres".to_vec()),
            Just(b"postgresqlx".to_vec()),
            prop::collection::vec(any::<u8>(), 1..20),
        ],
        0..5,
    )
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Set(at, byte)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
        1 => (any::<usize>(), 1usize..40).prop_map(|(at, count)| Damage::Remove(at, count)),
        1 => any::<usize>().prop_map(Damage::Truncate),
    ]
}

fn hello_case() -> impl Strategy<Value = HelloCase> {
    (
        server_name(),
        alpn(),
        any::<bool>(),
        prop_oneof![2 => Just(0usize), 1 => 1usize..300],
        prop_oneof![1 => Just(Vec::new()), 1 => prop::collection::vec(damage(), 1..4)],
    )
        .prop_map(
            |(server_name, alpn, tls12_only, fragment, damage)| HelloCase {
                server_name,
                alpn,
                tls12_only,
                fragment,
                damage,
            },
        )
}

fn input() -> impl Strategy<Value = Input> {
    let code = prop_oneof![
        Just(SSL_REQUEST_CODE),
        Just(GSSENC_REQUEST_CODE),
        Just(CANCEL_REQUEST_CODE),
        Just(PROTOCOL_3_0),
        any::<u32>(),
    ];
    let length = prop_oneof![Just(8u32), Just(16u32), any::<u32>()];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..2048).prop_map(Input::Bytes),
        2 => (length, code, prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(length, code, rest)| Input::Request { length, code, rest }),
        1 => prop::collection::vec(("[a-z_]{0,12}", "\\PC{0,20}"), 0..6).prop_map(Input::Startup),
        6 => (hello_case(), any::<bool>()).prop_map(|(case, after_ssl_request)| Input::Hello {
            case,
            after_ssl_request,
        }),
    ]
}

/// The ClientHello rustls' client writes for `case`, in one record, or `None` for a name
/// rustls will not send.
fn client_hello_bytes(case: &HelloCase) -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if case.tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .ok()?;
    let mut config = builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = case.alpn.clone();
    let name = rustls::pki_types::ServerName::try_from(case.server_name.clone()).ok()?;
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut bytes = Vec::new();
    client.write_tls(&mut bytes).ok()?;
    Some(bytes)
}

/// The handshake message of a one-record ClientHello split over records of `size` bytes.
fn refragment(record: &[u8], size: usize) -> Vec<u8> {
    let (header, message) = record.split_at(5);
    let mut bytes = Vec::with_capacity(record.len() + 5 * (message.len() / size + 1));
    for chunk in message.chunks(size) {
        bytes.extend_from_slice(&header[..3]);
        bytes.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        bytes.extend_from_slice(chunk);
    }
    bytes
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match damage {
        Damage::Set(at, byte) => bytes[at % len] = *byte,
        Damage::Insert(at, inserted) => {
            let at = at % (len + 1);
            bytes.splice(at..at, inserted.iter().copied());
        }
        Damage::Remove(at, count) => {
            let at = at % len;
            bytes.drain(at..(at + count).min(len));
        }
        Damage::Truncate(at) => bytes.truncate(at % len),
    }
}

fn request(length: u32, code: u32, rest: &[u8]) -> Vec<u8> {
    [&length.to_be_bytes()[..], &code.to_be_bytes(), rest].concat()
}

fn startup(parameters: &[(String, String)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (key, value) in parameters {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    [&((body.len() + 4) as u32).to_be_bytes()[..], &body].concat()
}

/// The properties of the parser on one input.
fn check(input: Input) -> Result<(), TestCaseError> {
    match input {
        Input::Bytes(bytes) => {
            let classified = classify(&bytes);
            if bytes.first() == Some(&0x16) {
                prop_assert_eq!(classified, Classified::Opening(Opening::DirectTls, 0));
            }
            let _ = client_hello(&bytes);
        }
        // TunnelRequests have their own unit tests; the parser must only not panic on them.
        Input::Request { code, .. } if code == tusk_api::tunnel_request::REQUEST_CODE => {
            let _ = classify(&request(8, code, &[]));
        }
        Input::Request { length, code, rest } => {
            let bytes = request(length, code, &rest);
            let expected = match (length, code) {
                _ if length >> 24 == 0x16 => Opening::DirectTls,
                (8, SSL_REQUEST_CODE) => Opening::SslRequest,
                (8, GSSENC_REQUEST_CODE) => Opening::GssEncRequest,
                (16, CANCEL_REQUEST_CODE) => Opening::CancelRequest,
                _ => Opening::Plaintext,
            };
            let used = match expected {
                Opening::SslRequest | Opening::GssEncRequest => 8,
                _ => 0,
            };
            prop_assert_eq!(classify(&bytes), Classified::Opening(expected, used));
            let _ = client_hello(&bytes);
        }
        Input::Startup(parameters) => {
            let bytes = startup(&parameters);
            prop_assert_eq!(classify(&bytes), Classified::Opening(Opening::Plaintext, 0));
            prop_assert_eq!(client_hello(&bytes), HelloParse::Invalid);
        }
        Input::Hello {
            case,
            after_ssl_request,
        } => check_hello(&case, after_ssl_request)?,
    }
    Ok(())
}

fn check_hello(case: &HelloCase, after_ssl_request: bool) -> Result<(), TestCaseError> {
    let Some(mut record) = client_hello_bytes(case) else {
        return Ok(());
    };
    // Damage goes into the one record, before any split, so that the name a damaged
    // ClientHello gives can be looked for in its content, where no record header cuts it.
    for damage in &case.damage {
        apply(&mut record, damage);
    }
    let bytes = if case.fragment == 0 || record.len() < 5 {
        record.clone()
    } else {
        refragment(&record, case.fragment)
    };
    if after_ssl_request {
        // The router consumes the SSLRequest and reads the ClientHello after its `S`.
        let opening = request(8, SSL_REQUEST_CODE, &bytes);
        prop_assert_eq!(
            classify(&opening),
            Classified::Opening(Opening::SslRequest, 8)
        );
    } else if case.damage.is_empty() || bytes.first() == Some(&0x16) {
        prop_assert_eq!(classify(&bytes), Classified::Opening(Opening::DirectTls, 0));
    } else {
        let _ = classify(&bytes);
    }
    if case.damage.is_empty() {
        let expected_name = match case.server_name.parse::<std::net::IpAddr>() {
            Ok(_) => None,
            Err(_) => Some(case.server_name.to_ascii_lowercase()),
        };
        let expected = HelloParse::Hello(tusk_router::handshake::Hello {
            server_name: expected_name,
            offers_postgres_alpn: case.alpn.iter().any(|p| p == b"postgresql"),
        });
        prop_assert_eq!(client_hello(&bytes), expected);
        // Every cut short of the end needs more; none is taken for a ClientHello.
        let step = (bytes.len() / 16).max(1);
        for cut in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
            prop_assert_eq!(
                client_hello(&bytes[..cut]),
                HelloParse::NeedMore,
                "cut {}",
                cut
            );
        }
        return Ok(());
    }
    if let HelloParse::Hello(hello) = client_hello(&bytes)
        && let Some(name) = hello.server_name
    {
        prop_assert!(
            record
                .windows(name.len())
                .any(|window| window.eq_ignore_ascii_case(name.as_bytes())),
            "{:?} is not in the bytes",
            name
        );
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args
        .next()
        .map(|text| text.parse().expect("SECONDS is a whole number"))
        .unwrap_or(60);
    let first_seed: u64 = args
        .next()
        .map(|text| text.parse().expect("SEED is a whole number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs())
        });
    let budget = Duration::from_secs(seconds);
    let started = Instant::now();
    let strategy = input();
    let mut cases: u64 = 0;
    let mut seed = first_seed;
    println!("fuzzing the handshake parser for {seconds} s from seed {first_seed}");
    while started.elapsed() < budget {
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let config = Config {
            cases: BATCH,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(
            config,
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        );
        match runner.run(&strategy, check) {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                eprintln!("FAILED at seed {seed}: {reason}\nsmallest input: {input:#?}");
                std::process::exit(1);
            }
            Err(TestError::Abort(reason)) => {
                eprintln!("ABORTED at seed {seed}: {reason}");
                std::process::exit(1);
            }
        }
        cases += u64::from(BATCH);
        seed += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "clean: {cases} cases in {elapsed:.0} s ({:.0}/s), seeds {first_seed}..{seed}",
        cases as f64 / elapsed
    );
}
