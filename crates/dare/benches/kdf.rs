//! The passphrase's key derivation: tusk's bounded-memory scrypt against the `scrypt` crate,
//! which holds ROMix's whole table, both with the envelope's parameters (N = 32768, r = 16,
//! p = 1). tusk's table is [`tusk_dare::kdf::ROMIX_MEMORY_LIMIT`] bytes; the crate's is 64 MiB.
//! Every backup, restore and WAL archiver derives this key once before its first byte.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

const LOG_N: u8 = 15;
const R: u32 = 16;

fn key_derivation(c: &mut Criterion) {
    let passphrase = b"correct horse battery staple";
    let salt = [7u8; 32];
    let mut group = c.benchmark_group("scrypt_envelope");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    group.bench_function("tusk_bounded", |b| {
        b.iter(|| {
            let mut key = [0u8; 32];
            tusk_dare::kdf::scrypt(black_box(passphrase), &salt, LOG_N, R, 1, &mut key).unwrap();
            key
        })
    });
    let params = scrypt::Params::new(LOG_N, R, 1).unwrap();
    group.bench_function("scrypt_crate_full_table", |b| {
        b.iter(|| {
            let mut key = [0u8; 32];
            scrypt::scrypt(black_box(passphrase), &salt, &params, &mut key).unwrap();
            key
        })
    });
    group.finish();
}

criterion_group!(kdf, key_derivation);
criterion_main!(kdf);
