//! Route lookup cost against the size of the routing table: one hash probe, so a table of
//! 10,000 databases costs what a table of 10 does.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tusk_router::routes::{Decision, Route, RouteTable};

fn table(size: usize) -> RouteTable {
    RouteTable::from_routes((0..size).map(|i| {
        (
            format!("cluster-{i}.tenant-{}.db.example.com", i % 97),
            Route {
                namespace: format!("tenant-{}", i % 97),
                cluster: format!("cluster-{i}"),
                backend: SocketAddr::from(([10, 96, (i / 256 % 256) as u8, (i % 256) as u8], 5432)),
                allowed: vec![
                    "203.0.113.0/24".parse().unwrap(),
                    "2001:db8::/32".parse().unwrap(),
                ],
                tunnel_digests: Vec::new(),
            },
        )
    }))
}

fn lookup(c: &mut Criterion) {
    let source = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    let mut group = c.benchmark_group("route lookup");
    for size in [10, 1_000, 10_000] {
        let table = table(size);
        let name = format!(
            "cluster-{}.tenant-{}.db.example.com",
            size / 2,
            (size / 2) % 97
        );
        group.bench_with_input(BenchmarkId::from_parameter(size), &name, |b, name| {
            b.iter(|| {
                let decision = table.decide(Some(black_box(name)), source);
                assert!(matches!(decision, Decision::Forward(_)));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
