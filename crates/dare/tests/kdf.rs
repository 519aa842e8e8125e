//! The bounded-memory scrypt of `tusk_dare::kdf` is scrypt: equal to the `scrypt` crate for
//! random inputs and several parameter sets (the envelope's among them), equal to RFC 7914's
//! test vectors. What it costs is measured by `benches/kdf.rs`, not here.

use proptest::prelude::*;
use tusk_dare::kdf;

fn reference(passphrase: &[u8], salt: &[u8], log_n: u8, r: u32, p: u32, len: usize) -> Vec<u8> {
    let params = scrypt::Params::new(log_n, r, p).unwrap();
    let mut out = vec![0; len];
    scrypt::scrypt(passphrase, salt, &params, &mut out).unwrap();
    out
}

fn bounded(passphrase: &[u8], salt: &[u8], log_n: u8, r: u32, p: u32, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    kdf::scrypt(passphrase, salt, log_n, r, p, &mut out).unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An RFC 7914 test vector: passphrase, salt, log2(N), r, p, and the 64-byte output in hex.
type Vector = (&'static [u8], &'static [u8], u8, u32, u32, &'static str);

#[test]
fn rfc_7914_test_vectors() {
    // RFC 7914, section 12.
    let cases: [Vector; 3] = [
        (
            b"",
            b"",
            4,
            1,
            1,
            "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442\
             fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906",
        ),
        (
            b"password",
            b"NaCl",
            10,
            8,
            16,
            "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162\
             2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640",
        ),
        (
            b"pleaseletmein",
            b"SodiumChloride",
            14,
            8,
            1,
            "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2\
             d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887",
        ),
    ];
    for (passphrase, salt, log_n, r, p, expected) in cases {
        assert_eq!(
            hex(&bounded(passphrase, salt, log_n, r, p, 64)),
            expected,
            "N = 2^{log_n}, r = {r}, p = {p}"
        );
    }
}

#[test]
fn the_envelopes_parameters_give_scrypts_key() {
    // N = 32768, r = 16, p = 1: the table would be 64 MiB, so only every 4th block is kept and
    // the rest are recomputed; the key must not change.
    for (passphrase, salt) in [
        (&b"correct horse battery staple"[..], [7u8; 32]),
        (&b""[..], [0u8; 32]),
        (&[0xffu8; 300][..], [0xa5u8; 32]),
    ] {
        assert_eq!(
            bounded(passphrase, &salt, 15, 16, 1, 32),
            reference(passphrase, &salt, 15, 16, 1, 32)
        );
    }
}

#[test]
fn tables_over_the_limit_give_scrypts_output_for_every_checkpoint_interval() {
    // 2^17 * 128 * 4 bytes = 64 MiB (every 4th block kept), 2^16 * 128 * 3 = 24 MiB (every 2nd,
    // r odd), 2^14 * 128 * 32 = 64 MiB (p = 2 reuses the table), 2^18 * 128 * 1 = 32 MiB.
    for (log_n, r, p) in [(17, 4, 1), (16, 3, 1), (14, 32, 2), (18, 1, 1)] {
        let passphrase = format!("passphrase {log_n} {r} {p}");
        let salt = [log_n; 32];
        assert_eq!(
            bounded(passphrase.as_bytes(), &salt, log_n, r, p, 48),
            reference(passphrase.as_bytes(), &salt, log_n, r, p, 48),
            "N = 2^{log_n}, r = {r}, p = {p}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_inputs_give_scrypts_output(
        passphrase in proptest::collection::vec(any::<u8>(), 0..100),
        salt in proptest::collection::vec(any::<u8>(), 0..64),
        log_n in 1u8..11,
        r in 1u32..9,
        p in 1u32..4,
        len in 1usize..100,
    ) {
        prop_assert_eq!(
            bounded(&passphrase, &salt, log_n, r, p, len),
            reference(&passphrase, &salt, log_n, r, p, len)
        );
    }
}
