//! A synthetic Dragonfly master for the stable-sync and scaling benchmarks
//! (`benches/e2e-stable.sh`, docs/performance.md).
//!
//! `dfly-emulator` proxies every write through a real redis-server under one lock, which caps
//! its journal at ~20k writes/s on this machine: far below what a replica must sustain. This
//! master has no keyspace: it answers the replica handshake (§2 of the protocol document) like
//! the emulator does, serves a generated snapshot of `--keys` strings (`SET`-able values of
//! `--value-size` bytes, encoded with the emulator's [`SnapWriter`], LZ4 frames), and after
//! `DFLY STARTSTABLE` writes `--ops` journal entries `SET k:<flow>:<n> <value>` spread over the
//! flows at `--rate` entries/s (0 = as fast as the replica takes them).
//!
//! Lag is measured with probe entries: every `--probe-ms` each flow puts an `RPUSH
//! probe:<flow>:<seq> 1` at the end of the buffer it is about to write; its clock starts just
//! before that `write`. A subscriber on the target (`notify-keyspace-events Kl`, `PSUBSCRIBE
//! __keyspace@0__:probe:*`) stops the clock when the target executed it. Probes are lists and
//! only list events are enabled, so the data `SET`s raise no notification: with `K$` every
//! `SET` published one, which cost the target ~40 % more CPU per entry than the ceiling pays. So lag = master
//! hands the entry to the kernel → the replica received, decoded, batched and pipelined it →
//! the target ran its `EXEC` and published the notification → the subscriber read it.
//!
//! Output (stdout, one line): offered and achieved send rate, applied rate (entries / time
//! until the last probe of every flow was visible), lag p50/p99/max and the probe count.
//!
//! ```text
//! bench_master --port 7400 --flows 2 --rate 100000 --ops 1000000 --target 127.0.0.1:6379
//! ```

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use df2redis_sync::emulator::journal::{encode_command, OP_COMMAND, OP_SELECT};
use df2redis_sync::emulator::proto::{ReadBuf, Value};
use df2redis_sync::emulator::rdbenc::{put_pu, Compression, FrameOpts, SnapWriter, Val};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 7400)]
    port: u16,
    /// Flows (shards).
    #[arg(long, default_value_t = 2)]
    flows: usize,
    /// String keys in the snapshot (`key:<i>`, spread over the flows).
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Value size of snapshot keys and journal SETs, bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Journal entries per second over all flows (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Journal entries in all (0 = none: idle in stable sync until killed).
    #[arg(long, default_value_t = 0)]
    ops: u64,
    /// Distinct journal keys per flow (the SETs cycle over them).
    #[arg(long, default_value_t = 100_000)]
    keyspace: u64,
    /// Probe period per flow, milliseconds.
    #[arg(long, default_value_t = 5)]
    probe_ms: u64,
    /// The target the replica writes to (for the probe subscriber).
    #[arg(long)]
    target: Option<String>,
    /// No keyspace notifications (they cost the target CPU on every write): only the final
    /// probes are looked for, by polling the target every millisecond; no lag figures.
    #[arg(long)]
    no_lag: bool,
    /// Write every probe as `<ms since the journal started> <lag µs>` to this file.
    #[arg(long)]
    dump: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

struct Shared {
    args: Args,
    replid: String,
    flows: Mutex<Vec<Option<TcpStream>>>,
    tokens: Vec<String>,
    /// Per flow: the snapshot was written.
    snap_done: Vec<AtomicBool>,
    /// Per flow: the stable trailer was written.
    stable_done: Vec<AtomicBool>,
    go_stable: AtomicBool,
    /// Probe key → the instant it was handed to the kernel.
    probes_sent: Mutex<HashMap<Vec<u8>, Instant>>,
    /// Lags seen by the subscriber, microseconds; and when each flow's last probe was seen.
    lags: Mutex<Vec<(Instant, u64)>>,
    last_seen: Mutex<HashMap<Vec<u8>, Instant>>,
    sent: AtomicU64,
    started: Mutex<Option<Instant>>,
    send_end: Mutex<Option<Instant>>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("bench_master: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port))?;
    let n = args.flows.max(1);
    let sh = Arc::new(Shared {
        replid: "b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6".into(),
        flows: Mutex::new((0..n).map(|_| None).collect()),
        tokens: (0..n).map(|i| format!("{:040x}", 0xbe00 + i)).collect(),
        snap_done: (0..n).map(|_| AtomicBool::new(false)).collect(),
        stable_done: (0..n).map(|_| AtomicBool::new(false)).collect(),
        go_stable: AtomicBool::new(false),
        probes_sent: Mutex::new(HashMap::new()),
        lags: Mutex::new(Vec::new()),
        last_seen: Mutex::new(HashMap::new()),
        sent: AtomicU64::new(0),
        started: Mutex::new(None),
        send_end: Mutex::new(None),
        args,
    });
    if let Some(t) = sh.args.target.clone() {
        let s2 = sh.clone();
        if sh.args.no_lag {
            poll_final(&t, &s2)?;
        } else {
            subscribe(&t, &s2)?;
        }
    }
    {
        let sh = sh.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let sh = sh.clone();
                thread::spawn(move || {
                    if let Err(e) = serve(conn, &sh) {
                        eprintln!("bench_master: connection: {e}");
                    }
                });
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(sh.args.timeout);
    if sh.args.ops == 0 {
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        return Ok(());
    }
    // Wait for the final probe of every flow.
    loop {
        let seen = sh.last_seen.lock().map(|m| m.len()).unwrap_or(0);
        if seen >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "timeout: {seen} of {n} final probes seen, {} entries sent",
                sh.sent.load(Ordering::Relaxed)
            )));
        }
        thread::sleep(Duration::from_millis(1));
    }
    report(&sh);
    Ok(())
}

fn report(sh: &Shared) {
    let start = sh.started.lock().ok().and_then(|g| *g);
    let send_end = sh.send_end.lock().ok().and_then(|g| *g);
    let end = sh
        .last_seen
        .lock()
        .ok()
        .and_then(|m| m.values().max().copied());
    let (Some(start), Some(send_end), Some(end)) = (start, send_end, end) else {
        eprintln!("bench_master: no measurement");
        return;
    };
    let sent = sh.sent.load(Ordering::Relaxed);
    let all = sh.lags.lock().map(|v| v.clone()).unwrap_or_default();
    if let Some(path) = &sh.args.dump {
        let text: String = all
            .iter()
            .map(|(t, l)| format!("{} {l}\n", t.saturating_duration_since(start).as_millis()))
            .collect();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("bench_master: {path}: {e}");
        }
    }
    let mut lags: Vec<u64> = all.iter().map(|(_, l)| *l).collect();
    lags.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lags.is_empty() {
            return f64::NAN;
        }
        let i = ((lags.len() as f64 - 1.0) * p).round() as usize;
        lags.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let send_s = send_end.duration_since(start).as_secs_f64();
    let apply_s = end.duration_since(start).as_secs_f64();
    // The result line is the program's output (stdout); logs go to stderr.
    let line = format!(
        "offered {} entries/s, sent {sent} entries in {send_s:.3}s = {:.0}/s, applied in {apply_s:.3}s = {:.0}/s; \
         lag ms p50 {:.2} p99 {:.2} max {:.2} ({} probes)",
        if sh.args.rate == 0 {
            "max".to_string()
        } else {
            sh.args.rate.to_string()
        },
        sent as f64 / send_s.max(1e-9),
        sent as f64 / apply_s.max(1e-9),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        lags.len()
    );
    let _ = writeln!(io::stdout().lock(), "{line}");
}

/// Without notifications: polls the target for each flow's final probe key.
fn poll_final(target: &str, sh: &Arc<Shared>) -> io::Result<()> {
    let mut conn = TcpStream::connect(target)?;
    conn.set_nodelay(true)?;
    let n = sh.args.flows.max(1);
    let sh = sh.clone();
    thread::spawn(move || {
        let mut rb = ReadBuf::default();
        let mut left: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("probe:{i}:last").into_bytes())
            .collect();
        while !left.is_empty() {
            let mut still = Vec::new();
            for key in left {
                let v = Value::Array(Some(vec![
                    Value::bulk(b"EXISTS".to_vec()),
                    Value::bulk(key.clone()),
                ]));
                if conn.write_all(&v.to_bytes()).is_err() {
                    return;
                }
                match rb.read_value(&mut conn) {
                    Ok(r) if r.as_int() == Some(1) => {
                        if let Ok(mut m) = sh.last_seen.lock() {
                            m.insert(key, Instant::now());
                        }
                    }
                    Ok(_) => still.push(key),
                    Err(_) => return,
                }
            }
            left = still;
            thread::sleep(Duration::from_millis(1));
        }
    });
    Ok(())
}

/// The probe subscriber on the target.
fn subscribe(target: &str, sh: &Arc<Shared>) -> io::Result<()> {
    let mut conn = TcpStream::connect(target)?;
    conn.set_nodelay(true)?;
    let mut rb = ReadBuf::default();
    let req = |c: &mut TcpStream, args: &[&[u8]]| -> io::Result<()> {
        let v = Value::Array(Some(args.iter().map(|a| Value::bulk(a.to_vec())).collect()));
        c.write_all(&v.to_bytes())
    };
    req(
        &mut conn,
        &[b"CONFIG", b"SET", b"notify-keyspace-events", b"Kl"],
    )?;
    let v = rb.read_value(&mut conn)?;
    if v.is_error() {
        return Err(io::Error::other(format!("CONFIG SET answered {v:?}")));
    }
    req(&mut conn, &[b"PSUBSCRIBE", b"__keyspace@0__:probe:*"])?;
    let _ = rb.read_value(&mut conn)?;
    let sh = sh.clone();
    thread::spawn(move || {
        while let Ok(v) = rb.read_value(&mut conn) {
            let now = Instant::now();
            let Some(items) = v.as_array() else { continue };
            let Some(chan) = items.get(2).and_then(Value::as_bytes) else {
                continue;
            };
            let Some(key) = chan.strip_prefix(b"__keyspace@0__:") else {
                continue;
            };
            let sent = sh.probes_sent.lock().ok().and_then(|mut m| m.remove(key));
            if let Some(t) = sent {
                if let Ok(mut l) = sh.lags.lock() {
                    l.push((t, now.duration_since(t).as_micros() as u64));
                }
            }
            if key.ends_with(b":last") {
                if let Ok(mut m) = sh.last_seen.lock() {
                    m.insert(key.to_vec(), now);
                }
            }
        }
    });
    Ok(())
}

fn reply(s: &mut TcpStream, v: Value) -> io::Result<()> {
    s.write_all(&v.to_bytes())
}

fn simple(s: &str) -> Value {
    Value::Simple(s.as_bytes().to_vec())
}

/// One connection: the main connection, or a flow after `DFLY FLOW`.
fn serve(mut s: TcpStream, sh: &Arc<Shared>) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut rb = ReadBuf::default();
    let n = sh.args.flows.max(1);
    let mut session = false;
    while let Some(args) = rb.read_request(&mut s)? {
        let up: Vec<String> = args
            .iter()
            .take(2)
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
            .collect();
        let first = up.first().map(String::as_str).unwrap_or("");
        let second = up.get(1).map(String::as_str).unwrap_or("");
        match (first, second) {
            ("PING", _) => reply(&mut s, simple("PONG"))?,
            ("AUTH", _) => reply(&mut s, Value::ok())?,
            ("INFO", _) => {
                let keys = sh.args.keys;
                let text = format!(
                    "# Server\r\nredis_version:7.4.0\r\ndragonfly_version:df-v1.40.1\r\n\
                     # Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n"
                );
                reply(&mut s, Value::bulk(text.into_bytes()))?
            }
            ("REPLCONF", "CAPA") if args.get(2).is_some_and(|a| a == b"dragonfly") => {
                session = true;
                reply(
                    &mut s,
                    Value::Array(Some(vec![
                        simple(&sh.replid),
                        simple("SYNC1"),
                        Value::Int(n as i64),
                        Value::Int(5),
                        simple(&sh.replid),
                    ])),
                )?
            }
            ("REPLCONF", "ACK") => {}
            ("REPLCONF", _) => reply(&mut s, Value::ok())?,
            ("DFLY", "FLOW") => {
                let id = args
                    .get(4)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|a| a.parse::<usize>().ok())
                    .filter(|i| *i < n);
                let Some(id) = id else {
                    reply(
                        &mut s,
                        Value::err("value is not an integer or out of range"),
                    )?;
                    continue;
                };
                session = true;
                if let Ok(mut f) = sh.flows.lock() {
                    f[id] = Some(s.try_clone()?);
                }
                reply(
                    &mut s,
                    Value::Array(Some(vec![simple("FULL"), simple(&sh.tokens[id])])),
                )?;
                // From here on the replica only sends REPLCONF ACK on this connection.
            }
            ("DFLY", "SYNC") => {
                let flows: Vec<(usize, TcpStream)> = match sh.flows.lock() {
                    Ok(f) => f
                        .iter()
                        .enumerate()
                        .filter_map(|(i, c)| {
                            c.as_ref().and_then(|c| c.try_clone().ok()).map(|c| (i, c))
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                if flows.len() != n {
                    reply(&mut s, Value::err("invalid state"))?;
                    continue;
                }
                for (i, c) in flows {
                    let sh = sh.clone();
                    thread::spawn(move || {
                        if let Err(e) = flow_writer(i, c, &sh) {
                            eprintln!("bench_master: flow {i}: {e}");
                        }
                    });
                }
                reply(&mut s, Value::ok())?
            }
            ("DFLY", "STARTSTABLE") => {
                sh.go_stable.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(30);
                while !sh.stable_done.iter().all(|d| d.load(Ordering::SeqCst)) {
                    if Instant::now() > deadline {
                        break;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                reply(&mut s, Value::ok())?
            }
            _ => reply(&mut s, Value::err("unknown command"))?,
        }
    }
    // The replica closed its main or a flow connection: like Dragonfly, end the whole session
    // (the replica waits for the master's FIN on every connection when it stops). Other
    // connections (a PING probe) just end.
    if session {
        std::process::exit(0)
    }
    Ok(())
}

/// Deterministic filler (xorshift), printable.
fn fill(seed: u64, out: &mut Vec<u8>, n: usize) {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    out.clear();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(A[(x & 63) as usize]);
    }
}

fn flow_writer(id: usize, mut c: TcpStream, sh: &Arc<Shared>) -> io::Result<()> {
    let a = &sh.args;
    let n = a.flows.max(1) as u64;
    let mut w = SnapWriter::new(FrameOpts {
        compression: Compression::Lz4,
        tagged: true,
        chunk_size: 65536,
        flush_size: 65536,
    });
    w.header(&[
        ("redis-ver", b"6.2.11".to_vec()),
        ("df-ver", b"df-v1.40.1".to_vec()),
        ("redis-bits", b"64".to_vec()),
        ("aof-preamble", b"0".to_vec()),
        ("shard-id", id.to_string().into_bytes()),
    ]);
    let mut val = Vec::new();
    let mut i = id as u64;
    while i < a.keys {
        fill(i, &mut val, a.value_size);
        w.entry(
            0,
            format!("key:{i}").as_bytes(),
            None,
            &Val::Str(val.clone()),
        );
        if w.out.len() >= 1 << 20 {
            c.write_all(&w.take())?;
        }
        i += n;
    }
    w.end_db();
    w.fullsync_end();
    c.write_all(&w.take())?;
    sh.snap_done[id].store(true, Ordering::SeqCst);
    while !sh.go_stable.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    w.finish(1, sh.tokens[id].as_bytes());
    c.write_all(&w.take())?;
    sh.stable_done[id].store(true, Ordering::SeqCst);
    if a.ops == 0 {
        return Ok(());
    }
    journal(id, &mut c, sh)
}

/// Appends a journal COMMAND entry of db 0, txid 0, one shard: the bytes
/// [`encode_command`] returns, without its allocation.
fn append_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let total: usize = args.iter().map(|a| a.len()).sum();
    out.push(OP_SELECT);
    put_pu(out, 0);
    out.push(OP_COMMAND);
    put_pu(out, 0);
    put_pu(out, 1);
    put_pu(out, args.len() as u64);
    put_pu(out, total as u64);
    for a in args {
        put_pu(out, a.len() as u64);
        out.extend_from_slice(a);
    }
}

/// Writes this flow's share of the journal at its share of the rate, with probes.
fn journal(id: usize, c: &mut TcpStream, sh: &Arc<Shared>) -> io::Result<()> {
    let a = &sh.args;
    let n = a.flows.max(1) as u64;
    let mine = a.ops / n + u64::from((id as u64) < a.ops % n);
    let rate = a.rate as f64 / n as f64;
    let start = {
        let mut g = sh
            .started
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        *g.get_or_insert_with(Instant::now)
    };
    let probe_every = Duration::from_millis(a.probe_ms.max(1));
    let mut next_probe = Instant::now() + probe_every;
    let mut seq = 0u64;
    let mut done = 0u64;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut val = Vec::new();
    fill(id as u64, &mut val, a.value_size);
    // The in-place encoder must write exactly what the emulator's encoder writes.
    let mut check = Vec::new();
    append_command(&mut check, &[b"SET", b"k:0:12345", &val]);
    if check != encode_command(0, OP_COMMAND, 0, 1, &[&b"SET"[..], b"k:0:12345", &val]) {
        return Err(io::Error::other(
            "append_command disagrees with encode_command",
        ));
    }
    let mut key = format!("k:{id}:").into_bytes();
    let key_prefix = key.len();
    let mut num = itoa::Buffer::new();
    while done < mine {
        let due = if a.rate == 0 {
            mine
        } else {
            ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(mine)
        };
        if done >= due {
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        let upto = due.min(done + 8192);
        let before = done;
        buf.clear();
        // Appended in place (no allocation per entry): this process shares the CPUs with the
        // replica and the target, so its own cost per entry is kept small.
        while done < upto {
            key.truncate(key_prefix);
            key.extend_from_slice(num.format(done % a.keyspace.max(1)).as_bytes());
            append_command(&mut buf, &[b"SET", &key, &val]);
            done += 1;
        }
        let probe = if done >= mine {
            Some(format!("probe:{id}:last").into_bytes())
        } else if Instant::now() >= next_probe {
            next_probe += probe_every;
            seq += 1;
            Some(format!("probe:{id}:{seq}").into_bytes())
        } else {
            None
        };
        if let Some(p) = &probe {
            buf.extend_from_slice(&encode_command(
                0,
                OP_COMMAND,
                0,
                1,
                &[&b"RPUSH"[..], p, b"1"],
            ));
            if let Ok(mut m) = sh.probes_sent.lock() {
                m.insert(p.clone(), Instant::now());
            }
        }
        c.write_all(&buf)?;
        sh.sent.fetch_add(done - before, Ordering::Relaxed);
    }
    if let Ok(mut g) = sh.send_end.lock() {
        *g = Some(g.map_or(Instant::now(), |t| t.max(Instant::now())));
    }
    // Keep the connection open (the replica would end the session on a close).
    thread::sleep(Duration::from_secs(a.timeout));
    Ok(())
}
