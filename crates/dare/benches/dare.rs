//! Single-thread throughput of DARE encryption and decryption on a 64 MiB buffer, for both
//! cipher suites. Target: AES-256-GCM encryption at 1500 MB/s or more per core.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tusk_dare::{CipherSuite, DecryptReader, EncryptWriter, Key};

const BUFFER_SIZE: usize = 64 << 20;

fn plaintext() -> Vec<u8> {
    (0..BUFFER_SIZE).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn encrypt(key: &Key, suite: CipherSuite, plaintext: &[u8], out: impl Write) -> io::Result<()> {
    let mut writer = EncryptWriter::new(out, key, suite)?;
    // Hand over data in 1 MiB pieces, as a pipeline stage would.
    for chunk in plaintext.chunks(1 << 20) {
        writer.write_all(chunk)?;
    }
    writer.finish()?;
    Ok(())
}

fn decrypt(key: &Key, stream: &[u8], scratch: &mut [u8]) -> io::Result<usize> {
    let mut reader = DecryptReader::new(stream, key);
    let mut total = 0;
    loop {
        let n = reader.read(scratch)?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

fn bench(c: &mut Criterion) {
    let key = Key::from_bytes([0x24; 32]);
    let plaintext = plaintext();
    let mut group = c.benchmark_group("dare_64MiB");
    group.throughput(Throughput::BytesDecimal(BUFFER_SIZE as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));

    for (name, suite) in [
        ("aes256gcm", CipherSuite::Aes256Gcm),
        ("chacha20poly1305", CipherSuite::ChaCha20Poly1305),
    ] {
        group.bench_function(format!("encrypt/{name}"), |b| {
            b.iter(|| encrypt(&key, suite, black_box(&plaintext), io::sink()).unwrap())
        });

        let mut stream = Vec::with_capacity(tusk_dare::encrypted_size(BUFFER_SIZE as u64) as usize);
        encrypt(&key, suite, &plaintext, &mut stream).unwrap();
        let mut scratch = vec![0; 1 << 20];
        group.bench_function(format!("decrypt/{name}"), |b| {
            b.iter(|| decrypt(&key, black_box(&stream), &mut scratch).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
