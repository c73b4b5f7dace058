//! Per-key CPU of the engine's other stages (criterion): RESP encoding of `Cmd` batches (what
//! a writer thread does), cluster slot routing, the rewrite of snapshot pieces and journal
//! entries into `Cmd`s, and decode + rewrite together for the 1M × 64-byte-string data set
//! (what a flow thread does per key, the figure that bounds a full sync per core). Run with
//! `cargo bench --bench engine` (add `-- --quick` for a fast pass; figures in
//! docs/performance.md).

mod common;

use std::hint::black_box;

use common::{flow, journal_mixed, journal_sets, per_type, strings, TOKEN};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use df2redis_sync::emulator::rdbenc::Compression;
use df2redis_sync::journal::{JournalDecoder, JournalEntry, JournalItem};
use df2redis_sync::model::Cmd;
use df2redis_sync::rdb::{EventRef, FlowDecoder, FlowEvent, Limits, Piece, SnapshotItem, Step};
use df2redis_sync::rewrite::{Options, Rewriter};
use df2redis_sync::route::Slot;

/// Commands per batch, as the flow thread ships them (about `pipeline.batch_bytes`).
const BATCH: usize = 1024;

fn set_cmds(n: usize) -> Vec<Cmd> {
    let val = [b'v'; 64];
    (0..n)
        .map(|i| {
            let mut c = Cmd::new("SET");
            c.arg(format!("key:{i:08}").as_bytes()).arg(&val);
            c
        })
        .collect()
}

fn bench_resp(c: &mut Criterion) {
    let mut g = c.benchmark_group("resp-encode");
    let mut hset = Cmd::new("HSET");
    hset.arg(b"hash:1");
    for i in 0..100 {
        hset.arg(format!("field-{i}").as_bytes())
            .arg(format!("value-{i}-xxxxxxxx").as_bytes());
    }
    for (name, cmds) in [
        ("set-64B", set_cmds(BATCH)),
        ("hset-100-pairs", vec![hset; BATCH / 16]),
    ] {
        let bytes: usize = cmds.iter().map(Cmd::resp_len).sum();
        let mut out = Vec::with_capacity(bytes);
        g.throughput(Throughput::Elements(cmds.len() as u64));
        g.bench_function(BenchmarkId::new("cmds", name), |b| {
            b.iter(|| {
                out.clear();
                for c in &cmds {
                    c.encode_resp(&mut out);
                }
                black_box(out.len())
            })
        });
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new("bytes", name), |b| {
            b.iter(|| {
                out.clear();
                for c in &cmds {
                    c.encode_resp(&mut out);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    let plain: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| format!("key:{i:08}").into_bytes())
        .collect();
    let tagged: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| format!("{{user:{i}}}:followers:list").into_bytes())
        .collect();
    let long: Vec<Vec<u8>> = (0..BATCH / 8)
        .map(|i| format!("session:{i}:{}", "x".repeat(200)).into_bytes())
        .collect();
    for (name, keys) in [("key-12B", plain), ("hashtag", tagged), ("key-210B", long)] {
        g.throughput(Throughput::Elements(keys.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for k in &keys {
                    acc = acc.wrapping_add(u32::from(Slot::of_key(k).get()));
                }
                black_box(acc)
            })
        });
    }
    g.finish();
}

/// Every piece of a synthetic flow, decoded once up front.
fn pieces(bytes: &[u8]) -> Vec<Piece> {
    let mut d = FlowDecoder::new_full(TOKEN, Limits::default());
    let mut pos = 0;
    let mut out = Vec::new();
    while let Ok((Step::Item(e), used)) = d.step(&bytes[pos..]) {
        pos += used;
        match e {
            FlowEvent::Snapshot(SnapshotItem::Piece(p)) => out.push(p),
            FlowEvent::EofToken => break,
            _ => {}
        }
    }
    out
}

fn entries(bytes: &[u8]) -> Vec<JournalEntry> {
    let mut d = JournalDecoder::new(Limits::default());
    let mut pos = 0;
    let mut out = Vec::new();
    while let Ok((Step::Item(it), used)) = d.step(&bytes[pos..]) {
        pos += used;
        if let JournalItem::Entry(e) = it {
            out.push(e);
        }
    }
    out
}

fn opts() -> Options {
    Options {
        now_ms: 1_700_000_000_000,
        ..Options::default()
    }
}

fn bench_rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("rewrite");
    g.sample_size(20);
    let rw = Rewriter::new(opts());
    for f in per_type() {
        if !matches!(
            f.name,
            "string-64B" | "hash-listpack" | "zset-skiplist" | "stream"
        ) {
            continue;
        }
        let ps = pieces(&f.bytes);
        g.throughput(Throughput::Elements(f.elements));
        g.bench_function(BenchmarkId::new("piece", f.name), |b| {
            b.iter(|| {
                let mut n = 0;
                for p in &ps {
                    n += rw.piece(p).cmds.len();
                }
                black_box(n)
            })
        });
    }
    let n = 100_000u64;
    for (name, bytes) in [("set-64B", journal_sets(n)), ("mixed", journal_mixed(n))] {
        let es = entries(&bytes);
        let mut rw = Rewriter::new(opts());
        g.throughput(Throughput::Elements(es.len() as u64));
        g.bench_function(BenchmarkId::new("journal", name), |b| {
            b.iter(|| {
                let mut n = 0;
                for e in &es {
                    n += rw.entry(e).map(|r| r.cmds.len()).unwrap_or(0);
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

/// What a flow thread does per key during a full sync (`pipeline`'s flow loop): decode the
/// next event (whole string keys borrowed, [`FlowDecoder::step_ref`]), rewrite it, append the
/// commands to the pending batch, hand a full batch over (dropped here; the writer frees it).
/// With `encode`, also the writer's RESP encoding of each batch: the whole CPU cost of one
/// key in the engine minus the sockets.
fn flow_thread(bytes: &[u8], encode: bool, out: &mut Vec<u8>) -> usize {
    let mut d = FlowDecoder::new_full(TOKEN, Limits::default());
    let mut rw = Rewriter::new(opts());
    let mut batch: Vec<Cmd> = Vec::with_capacity(BATCH);
    let mut pos = 0;
    let mut keys = 0;
    loop {
        let Ok((Step::Item(ev), used)) = d.step_ref(&bytes[pos..]) else {
            panic!("bench flow does not decode at {pos}");
        };
        pos += used;
        let r = match ev {
            EventRef::String(s) => {
                keys += 1;
                rw.string_ref(&s)
            }
            EventRef::Event(FlowEvent::EofToken) => break,
            EventRef::Event(ev) => {
                if let FlowEvent::Snapshot(SnapshotItem::Piece(p)) = &ev {
                    keys += usize::from(p.first);
                }
                rw.flow_event(&ev).expect("bench flow rewrites")
            }
        };
        batch.extend(r.cmds);
        if batch.len() >= BATCH {
            if encode {
                out.clear();
                for c in &batch {
                    c.encode_resp(out);
                }
            }
            black_box(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
        }
    }
    keys
}

fn bench_flow(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow-thread");
    g.sample_size(20);
    let plain = flow("string-64B", Compression::None, strings(100_000, 64));
    let lz4 = flow("string-64B-lz4", Compression::Lz4, strings(100_000, 64));
    let mut out = Vec::with_capacity(1 << 20);
    for f in [&plain, &lz4] {
        g.throughput(Throughput::Elements(f.keys));
        g.bench_function(BenchmarkId::new("decode+rewrite/keys", f.name), |b| {
            b.iter(|| flow_thread(&f.bytes, false, &mut out))
        });
        g.throughput(Throughput::Bytes(f.bytes.len() as u64));
        g.bench_function(BenchmarkId::new("decode+rewrite/bytes", f.name), |b| {
            b.iter(|| flow_thread(&f.bytes, false, &mut out))
        });
        g.throughput(Throughput::Elements(f.keys));
        g.bench_function(BenchmarkId::new("decode+rewrite+resp/keys", f.name), |b| {
            b.iter(|| flow_thread(&f.bytes, true, &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_resp, bench_route, bench_rewrite, bench_flow);
criterion_main!(benches);
