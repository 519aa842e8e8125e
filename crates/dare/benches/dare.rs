//! Single-thread throughput of DARE encryption and decryption on a 64 MiB buffer, for both
//! cipher suites. Target: AES-256-GCM encryption at 1500 MB/s or more per core.
//!
//! Each group is measured twice: by wall-clock time (`wall/...`) and by the CPU time of the
//! benchmark thread (`cpu/...`). On a shared machine the CPU-time figure is the per-core
//! throughput; the wall-clock one also counts time the thread spent waiting for a core.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
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

fn bench_suites<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let key = Key::from_bytes([0x24; 32]);
    let plaintext = plaintext();
    let mut group = c.benchmark_group(format!("{clock}/dare_64MiB"));
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

fn wall_clock(c: &mut Criterion<WallTime>) {
    bench_suites(c, "wall");
}

fn thread_cpu(c: &mut Criterion<ThreadCpuTime>) {
    bench_suites(c, "cpu");
}

/// CPU time consumed by the measuring thread, in nanoseconds.
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = cpu_time::ThreadTime;
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        cpu_time::ThreadTime::now()
    }

    fn end(&self, started: Self::Intermediate) -> Self::Value {
        started.elapsed()
    }

    fn add(&self, a: &Self::Value, b: &Self::Value) -> Self::Value {
        *a + *b
    }

    fn zero(&self) -> Self::Value {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanosFormatter
    }
}

/// Formats CPU nanoseconds as milliseconds and byte throughputs as decimal MB/s.
struct CpuNanosFormatter;

impl ValueFormatter for CpuNanosFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v /= 1e6);
        "ms (cpu)"
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let bytes = match throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => *n as f64,
            _ => 0.0,
        };
        values
            .iter_mut()
            .for_each(|v| *v = bytes / (*v / 1e9) / 1e6);
        "MB/s (cpu)"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(wall, wall_clock);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = thread_cpu
}
criterion_main!(wall, cpu);
