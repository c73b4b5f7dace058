//! Decode throughput (criterion): synthetic snapshot streams per value type (bytes/s and
//! elements/s), a synthetic journal stream, and the real recordings of
//! `../shared/testdata` (LZ4, plain, ZSTD flows). Run with `cargo bench --bench decode`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use df2redis_sync::journal::JournalDecoder;
use df2redis_sync::rdb::consts::*;
use df2redis_sync::rdb::{FlowDecoder, Limits, SnapshotDecoder, SnapshotItem, Step};
use df2redis_sync::wire::{put_pu, put_raw_str};

/// Decodes a whole snapshot from one buffer; returns the number of pieces (so nothing is
/// optimised away).
fn decode_snapshot(bytes: &[u8]) -> usize {
    let mut d = SnapshotDecoder::new(Limits::default());
    let mut pos = 0;
    let mut n = 0;
    loop {
        let (s, used) = d.step(&bytes[pos..]).expect("bench input decodes");
        pos += used;
        match s {
            Step::Item(SnapshotItem::Piece(p)) => {
                n += 1;
                black_box(&p);
            }
            Step::Item(_) => {}
            _ => return n,
        }
    }
}

fn header() -> Vec<u8> {
    let mut v = b"REDIS0009".to_vec();
    v.push(OP_SELECTDB);
    v.push(0);
    v
}

fn footer(v: &mut Vec<u8>) {
    v.push(OP_EOF);
    v.extend_from_slice(&[0; 8]);
}

/// A listpack of short strings.
fn listpack(elems: &[Vec<u8>]) -> Vec<u8> {
    let mut lp = vec![0u8; 6];
    for e in elems {
        lp.push(0x80 | e.len() as u8);
        lp.extend_from_slice(e);
        lp.push(1 + e.len() as u8);
    }
    lp.push(0xFF);
    let t = lp.len() as u32;
    lp[..4].copy_from_slice(&t.to_le_bytes());
    lp[4..6].copy_from_slice(&(elems.len() as u16).to_le_bytes());
    lp
}

/// Synthetic streams: (name, bytes, element count).
fn synthetic() -> Vec<(&'static str, Vec<u8>, u64)> {
    let mut out = Vec::new();
    for (name, size, keys) in [
        ("string-64B", 64usize, 100_000u64),
        ("string-16KiB", 16 << 10, 2_000),
    ] {
        let mut v = header();
        let val = vec![b'v'; size];
        for i in 0..keys {
            v.push(TYPE_STRING);
            put_raw_str(&mut v, format!("key:{i:08}").as_bytes());
            put_raw_str(&mut v, &val);
        }
        footer(&mut v);
        out.push((name, v, keys));
    }
    // Hash, plain encoding: 100 keys × 1000 pairs.
    let mut v = header();
    for k in 0..100 {
        v.push(TYPE_HASH);
        put_raw_str(&mut v, format!("hash:{k}").as_bytes());
        put_pu(&mut v, 1000);
        for i in 0..1000 {
            put_raw_str(&mut v, format!("field-{i}").as_bytes());
            put_raw_str(&mut v, format!("value-{i}-xxxxxxxxxxxx").as_bytes());
        }
    }
    footer(&mut v);
    out.push(("hash-plain", v, 100_000));
    // Zset, binary scores.
    let mut v = header();
    for k in 0..100 {
        v.push(TYPE_ZSET_2);
        put_raw_str(&mut v, format!("zset:{k}").as_bytes());
        put_pu(&mut v, 1000);
        for i in 0..1000 {
            put_raw_str(&mut v, format!("member-{i}").as_bytes());
            v.extend_from_slice(&(f64::from(i) * 0.5).to_le_bytes());
        }
    }
    footer(&mut v);
    out.push(("zset2", v, 100_000));
    // List: quicklist 2, packed nodes of 128 elements.
    let mut v = header();
    let node: Vec<Vec<u8>> = (0..128)
        .map(|i| format!("element-{i:04}").into_bytes())
        .collect();
    let lp = listpack(&node);
    for k in 0..100 {
        v.push(TYPE_LIST_QUICKLIST_2);
        put_raw_str(&mut v, format!("list:{k}").as_bytes());
        put_pu(&mut v, 8);
        for _ in 0..8 {
            put_pu(&mut v, QUICKLIST_NODE_CONTAINER_PACKED);
            put_raw_str(&mut v, &lp);
        }
    }
    footer(&mut v);
    out.push(("list-quicklist2", v, 100 * 8 * 128));
    // Set: plain.
    let mut v = header();
    for k in 0..100 {
        v.push(TYPE_SET);
        put_raw_str(&mut v, format!("set:{k}").as_bytes());
        put_pu(&mut v, 1000);
        for i in 0..1000 {
            put_raw_str(&mut v, format!("member-{i}").as_bytes());
        }
    }
    footer(&mut v);
    out.push(("set-plain", v, 100_000));
    out
}

fn bench_synthetic(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    for (name, bytes, elems) in synthetic() {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("bytes", name), &bytes, |b, bytes| {
            b.iter(|| decode_snapshot(bytes))
        });
        g.throughput(Throughput::Elements(elems));
        g.bench_with_input(BenchmarkId::new("elements", name), &bytes, |b, bytes| {
            b.iter(|| decode_snapshot(bytes))
        });
    }
    g.finish();
}

fn bench_journal(c: &mut Criterion) {
    let mut v = Vec::new();
    let n = 100_000u64;
    for i in 0..n {
        let key = format!("key:{i:08}");
        let val = b"value-of-some-length-32-bytes!!!";
        v.extend_from_slice(&[6, 0, 10, 0, 1, 3]);
        put_pu(&mut v, (3 + key.len() + val.len()) as u64);
        put_raw_str(&mut v, b"SET");
        put_raw_str(&mut v, key.as_bytes());
        put_raw_str(&mut v, val);
    }
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(n));
    g.bench_function("set-entries", |b| {
        b.iter(|| {
            let mut d = JournalDecoder::new(Limits::default());
            let mut pos = 0;
            while let Ok((Step::Item(it), used)) = d.step(&v[pos..]) {
                pos += used;
                black_box(&it);
            }
            pos
        })
    });
    g.throughput(Throughput::Bytes(v.len() as u64));
    g.bench_function("set-bytes", |b| {
        b.iter(|| {
            let mut d = JournalDecoder::new(Limits::default());
            let mut pos = 0;
            while let Ok((Step::Item(it), used)) = d.step(&v[pos..]) {
                pos += used;
                black_box(&it);
            }
            pos
        })
    });
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

criterion_group!(benches, bench_synthetic, bench_journal, bench_recordings);
criterion_main!(benches);
