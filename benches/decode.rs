//! Decode throughput (criterion): synthetic flows per value type (bytes/s and elements/s)
//! built with the emulator's snapshot encoder, the 64-byte string flow LZ4-compressed as
//! Dragonfly sends it by default, journal streams, and the real recordings of
//! `../shared/testdata` (LZ4, plain, ZSTD flows). Run with `cargo bench --bench decode`
//! (add `-- --quick` for a fast pass; figures in docs/performance.md).

mod common;

use std::hint::black_box;

use common::{
    decode_flow, decode_flow_owned, decode_journal, flow, journal_mixed, journal_sets, per_type,
    strings,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use df2redis_sync::emulator::rdbenc::Compression;
use df2redis_sync::rdb::{FlowDecoder, Limits, Step};

fn bench_snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(20);
    let mut flows = per_type();
    flows.push(flow(
        "string-64B-lz4",
        Compression::Lz4,
        strings(100_000, 64),
    ));
    flows.push(flow(
        "string-64B-zstd",
        Compression::Zstd,
        strings(100_000, 64),
    ));
    for f in &flows {
        if f.name.starts_with("string-64B") {
            // The owned API (every key copied out), for comparison.
            g.throughput(Throughput::Bytes(f.bytes.len() as u64));
            g.bench_with_input(
                BenchmarkId::new("owned-bytes", f.name),
                &f.bytes,
                |b, bytes| b.iter(|| decode_flow_owned(bytes)),
            );
        }
        g.throughput(Throughput::Bytes(f.bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("bytes", f.name), &f.bytes, |b, bytes| {
            b.iter(|| decode_flow(bytes))
        });
        g.throughput(Throughput::Elements(f.elements));
        g.bench_with_input(
            BenchmarkId::new("elements", f.name),
            &f.bytes,
            |b, bytes| b.iter(|| decode_flow(bytes)),
        );
    }
    g.finish();
}

fn bench_journal(c: &mut Criterion) {
    let n = 100_000u64;
    let mut g = c.benchmark_group("journal");
    g.sample_size(20);
    for (name, v) in [("set-64B", journal_sets(n)), ("mixed", journal_mixed(n))] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("entries", name), &v, |b, v| {
            b.iter(|| decode_journal(v))
        });
        g.throughput(Throughput::Bytes(v.len() as u64));
        g.bench_with_input(BenchmarkId::new("bytes", name), &v, |b, v| {
            b.iter(|| decode_journal(v))
        });
    }
    g.finish();
}

fn bench_recordings(c: &mut Criterion) {
    let base = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/dragonfly-v1.40.1"
    );
    let mut g = c.benchmark_group("recordings");
    g.sample_size(10);
    for (name, path) in [
        ("s1-lz4-flow0", "s1-lz4-2shards/capture/conn-002.s2c.bin"),
        (
            "s2-plain-flow1",
            "s2-plain-3shards/capture/conn-001.s2c.bin",
        ),
        (
            "s3-zstd-flow0",
            "s3-zstd-contiguous-chunks/capture/conn-002.s2c.bin",
        ),
    ] {
        let Ok(raw) = std::fs::read(format!("{base}/{path}")) else {
            continue;
        };
        // Strip the 54-byte `*2 +FULL +<token>` FLOW reply.
        let token = raw[12..52].to_vec();
        let bytes = raw[54..].to_vec();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut d = FlowDecoder::new_full(&token, Limits::default());
                let mut pos = 0;
                let mut n = 0;
                while let Ok((Step::Item(e), used)) = d.step(&bytes[pos..]) {
                    pos += used;
                    n += 1;
                    black_box(&e);
                }
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_snapshot, bench_journal, bench_recordings);
criterion_main!(benches);
