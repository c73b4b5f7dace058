//! Integration tests: the `dfly-emulator` binary over a real redis-server.
//!
//! Each test starts its own redis-server (free loopback port, no persistence) and the emulator
//! with `--backend` pointing at it; both are killed on drop. A minimal scripted replica (raw
//! sockets) speaks the replica side of the protocol.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use df2redis_sync::emulator::proto::{parse_value, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// redis-server + dfly-emulator, killed on drop.
struct Emu {
    redis: Child,
    emu: Child,
    port: u16,
    backend_port: u16,
    _dir: tempfile::TempDir,
}

impl Emu {
    fn start(extra: &[&str]) -> Emu {
        let dir = tempfile::tempdir().unwrap();
        let backend_port = free_port();
        let redis = Command::new("redis-server")
            .args([
                "--port",
                &backend_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--notify-keyspace-events", "Ex"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        wait_port(backend_port);
        let port = free_port();
        let emu = Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
            .args([
                "--port",
                &port.to_string(),
                "--backend",
                &format!("127.0.0.1:{backend_port}"),
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("dfly-emulator binary");
        wait_port(port);
        Emu {
            redis,
            emu,
            port,
            backend_port,
            _dir: dir,
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    fn backend_cli(&self, args: &[&str]) -> String {
        cli(self.backend_port, args)
    }

    fn conn(&self) -> Client {
        Client::new(self.port)
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.emu.kill();
        let _ = self.emu.wait();
        let _ = self.redis.kill();
        let _ = self.redis.wait();
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli on PATH");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A blocking RESP client.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.s.write_all(&out).unwrap();
    }

    fn read(&mut self) -> Value {
        loop {
            if let Some((v, n)) = parse_value(&self.buf).unwrap() {
                self.buf.drain(..n);
                return v;
            }
            let mut tmp = [0u8; 65536];
            let n = self.s.read(&mut tmp).unwrap();
            assert!(n > 0, "connection closed while waiting for a reply");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    fn call(&mut self, args: &[&str]) -> Value {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send(&a);
        self.read()
    }
}

fn text(v: &Value) -> String {
    String::from_utf8_lossy(
        v.as_bytes()
            .unwrap_or_else(|| panic!("not a string: {v:?}")),
    )
    .into_owned()
}

/// A flow connection whose bytes are collected by a reader thread.
struct FlowConn {
    stream: TcpStream,
    data: Arc<Mutex<Vec<u8>>>,
    closed: Arc<Mutex<bool>>,
    reader: Option<JoinHandle<()>>,
    token: String,
    kind: String,
}

impl FlowConn {
    fn start_reading(&mut self) {
        let mut s = self.stream.try_clone().unwrap();
        let data = self.data.clone();
        let closed = self.closed.clone();
        self.reader = Some(std::thread::spawn(move || {
            let mut tmp = vec![0u8; 1 << 16];
            loop {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.lock().unwrap().extend_from_slice(&tmp[..n]),
                }
            }
            *closed.lock().unwrap() = true;
        }));
    }

    fn bytes(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str, f: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let b = self.bytes();
            if f(&b) {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; have {} bytes",
                b.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn ack(&mut self, lsn: u64) {
        let l = lsn.to_string();
        let msg = format!(
            "*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n${}\r\n{l}\r\n",
            l.len()
        );
        self.stream.write_all(msg.as_bytes()).unwrap();
    }
}

/// The scripted replica: main connection + N flows.
struct Replica {
    main: Client,
    replid: String,
    sync_id: String,
    capa: Vec<Value>,
    flows: Vec<FlowConn>,
}

impl Replica {
    /// Handshake and DFLY FLOW for every flow (with `lsns` for a partial request).
    fn connect(port: u16, lsns: Option<&[u64]>) -> Replica {
        let mut main = Client::new(port);
        assert_eq!(text(&main.call(&["PING"])), "PONG");
        assert_eq!(
            text(&main.call(&["REPLCONF", "listening-port", "7777"])),
            "OK"
        );
        assert_eq!(
            text(&main.call(&["REPLCONF", "capa", "eof", "capa", "psync2"])),
            "OK"
        );
        let capa = main
            .call(&["REPLCONF", "capa", "dragonfly"])
            .as_array()
            .unwrap()
            .to_vec();
        let replid = text(&capa[0]);
        let sync_id = text(&capa[1]);
        assert_eq!(text(&main.call(&["REPLCONF", "CLIENT-VERSION", "5"])), "OK");
        let n = capa[2].as_int().unwrap() as usize;
        let mut flows = Vec::new();
        for i in 0..n {
            let mut c = Client::new(port);
            let id = i.to_string();
            let mut args = vec!["DFLY", "FLOW", &replid, &sync_id, &id];
            let lsn;
            if let Some(l) = lsns {
                lsn = l[i].to_string();
                args.push(&lsn);
            }
            let r = c.call(&args);
            let r = r.as_array().unwrap_or_else(|| panic!("FLOW reply: {r:?}"));
            assert!(
                c.buf.is_empty(),
                "nothing may follow the FLOW reply before SYNC"
            );
            flows.push(FlowConn {
                stream: c.s,
                data: Arc::default(),
                closed: Arc::default(),
                reader: None,
                token: text(&r[1]),
                kind: text(&r[0]),
            });
        }
        Replica {
            main,
            replid,
            sync_id,
            capa,
            flows,
        }
    }

    fn sync(&mut self) {
        for f in &mut self.flows {
            f.start_reading();
        }
        let id = self.sync_id.clone();
        assert_eq!(text(&self.main.call(&["DFLY", "SYNC", &id])), "OK");
    }

    fn start_stable(&mut self) {
        let id = self.sync_id.clone();
        assert_eq!(text(&self.main.call(&["DFLY", "STARTSTABLE", &id])), "OK");
    }
}

/// Finds FULLSYNC_END at the end of what has arrived (C8 + 8 zeros).
fn has_fullsync_end(b: &[u8]) -> bool {
    b.windows(9).any(|w| w == [0xC8, 0, 0, 0, 0, 0, 0, 0, 0])
}

/// Splits a finished FULL flow: (snapshot part, next LSN, journal bytes after the token).
fn split_trailer(b: &[u8], token: &str) -> (usize, u64, Vec<u8>) {
    let t = token.as_bytes();
    let tpos = b
        .windows(40)
        .position(|w| w == t)
        .expect("eof token in the stream");
    assert!(tpos >= 18, "trailer too short");
    assert_eq!(
        &b[tpos - 9..tpos],
        &[0xFF, 0, 0, 0, 0, 0, 0, 0, 0],
        "EOF + zero checksum before the token"
    );
    assert_eq!(b[tpos - 18], 0xD3, "JOURNAL_OFFSET before EOF");
    let lsn = u64::from_le_bytes(b[tpos - 17..tpos - 9].try_into().unwrap());
    (tpos - 18, lsn, b[tpos + 40..].to_vec())
}

/// A decoded journal item: (db, opcode, txid, args) or a PING / LSN marker.
#[derive(Debug, PartialEq)]
enum J {
    Cmd {
        db: u64,
        op: u8,
        txid: u64,
        args: Vec<Vec<u8>>,
    },
    Ping,
    Lsn(u64),
}

fn pu(b: &[u8], p: &mut usize) -> Option<u64> {
    let f = *b.get(*p)?;
    let (v, n) = match f >> 6 {
        0 => (u64::from(f & 0x3F), 1),
        1 => ((u64::from(f & 0x3F) << 8) | u64::from(*b.get(*p + 1)?), 2),
        _ if f == 0x80 => (
            u64::from(u32::from_be_bytes(b.get(*p + 1..*p + 5)?.try_into().ok()?)),
            5,
        ),
        _ => {
            assert_eq!(f, 0x81, "bad packed uint at {p}");
            (
                u64::from_be_bytes(b.get(*p + 1..*p + 9)?.try_into().ok()?),
                9,
            )
        }
    };
    *p += n;
    Some(v)
}

/// Decodes one item at `p`; `None` when it is not complete yet.
fn decode_one(b: &[u8], p: &mut usize, db: &mut u64) -> Option<Option<J>> {
    let start = *p;
    let op = *b.get(*p)?;
    *p += 1;
    Some(match op {
        0x06 => {
            *db = pu(b, p)?;
            None
        }
        0x0D => Some(J::Ping),
        0x0F => Some(J::Lsn(pu(b, p)?)),
        0x0A | 0x09 => {
            let txid = pu(b, p)?;
            let _shard_cnt = pu(b, p)?;
            let n = pu(b, p)?;
            let _total = pu(b, p)?;
            let mut args = Vec::new();
            for _ in 0..n {
                let l = pu(b, p)? as usize;
                args.push(b.get(*p..*p + l)?.to_vec());
                *p += l;
            }
            Some(J::Cmd {
                db: *db,
                op,
                txid,
                args,
            })
        }
        _ => panic!("unknown journal opcode {op:#x} at byte {start}"),
    })
}

/// Decodes the complete journal items of `b` (a test-side reader of §4.3).
fn decode_journal(b: &[u8]) -> Vec<J> {
    let mut p = 0;
    let mut out = Vec::new();
    let mut db = 0;
    while p < b.len() {
        let mut q = p;
        let mut d = db;
        match decode_one(b, &mut q, &mut d) {
            None => break,
            Some(item) => {
                p = q;
                db = d;
                out.extend(item);
            }
        }
    }
    out
}

fn cmds_of(items: &[J]) -> Vec<String> {
    items
        .iter()
        .filter_map(|j| match j {
            J::Cmd { args, .. } => Some(
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .collect()
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(&format!("{name}:"))
            .map(|v| v.trim().to_string())
    })
}

#[test]
fn redis_cli_and_redis_benchmark_work_through_the_emulator() {
    let e = Emu::start(&[]);
    assert_eq!(e.cli(&["SET", "greeting", "hello"]), "OK");
    assert_eq!(e.cli(&["GET", "greeting"]), "hello");
    assert_eq!(e.cli(&["RPUSH", "l", "a", "b", "c"]), "3");
    assert_eq!(e.cli(&["LRANGE", "l", "0", "-1"]), "a\nb\nc");
    // The write really lives in the backing redis-server.
    assert_eq!(e.backend_cli(&["GET", "greeting"]), "hello");
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &e.port.to_string(),
            "-n",
            "2000",
            "-c",
            "4",
            "-q",
            "-t",
            "ping,set,get,incr,lpush,rpop,sadd,hset,mset",
        ])
        .output()
        .expect("redis-benchmark on PATH");
    assert!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    for t in ["SET", "GET", "INCR", "LPUSH", "MSET"] {
        assert!(report.contains(t), "no {t} line in: {report}");
    }
    assert_eq!(e.backend_cli(&["GET", "counter:__rand_int__"]), "2000");
}

#[test]
fn handshake_replies_as_v140_and_v134() {
    let e = Emu::start(&["--shards", "3"]);
    let info = text(&e.conn().call(&["INFO", "SERVER"]));
    assert_eq!(
        info_field(&info, "dragonfly_version").as_deref(),
        Some("df-v1.40.1")
    );
    let mut r = Replica::connect(e.port, None);
    assert_eq!(r.capa.len(), 5);
    assert_eq!(r.replid.len(), 40);
    assert!(r.replid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(r.sync_id.starts_with("SYNC"));
    assert_eq!(r.capa[2], Value::Int(3));
    assert_eq!(r.capa[3], Value::Int(5));
    assert_eq!(text(&r.capa[4]), r.replid);
    for f in &r.flows {
        assert_eq!(f.kind, "FULL");
        assert_eq!(f.token.len(), 40);
    }
    // Wrong ids are refused as Dragonfly refuses them.
    let mut c = e.conn();
    let bad = c.call(&[
        "DFLY",
        "FLOW",
        "0000000000000000000000000000000000000000",
        &r.sync_id,
        "0",
    ]);
    assert_eq!(bad, Value::Error(b"ERR bad master id".to_vec()));
    let bad = c.call(&["DFLY", "FLOW", &r.replid, "SYNCx", "0"]);
    assert_eq!(bad, Value::Error(b"ERR bad sync id".to_vec()));
    let bad = c.call(&["DFLY", "FLOW", &r.replid, "SYNC999", "0"]);
    assert_eq!(bad, Value::Error(b"ERR syncid not found".to_vec()));
    assert_eq!(
        c.call(&["REPLCONF", "listening-port"]),
        Value::Error(b"ERR syntax error".to_vec())
    );
    let id = r.sync_id.clone();
    assert_eq!(
        r.main.call(&["DFLY", "STARTSTABLE", &id]),
        Value::Error(b"ERR invalid state".to_vec())
    );
    drop(r);

    let e = Emu::start(&["--version", "1.34"]);
    let r = Replica::connect(e.port, None);
    assert_eq!(r.capa.len(), 4, "v1.34 answers 4 elements");
    assert_eq!(r.capa[3], Value::Int(4));
    let info = text(&e.conn().call(&["INFO", "SERVER"]));
    assert_eq!(
        info_field(&info, "dragonfly_version").as_deref(),
        Some("df-v1.34.2")
    );
}

#[test]
fn full_sync_then_stable_journal_with_rewrites_and_acks_in_info() {
    let e = Emu::start(&["--shards", "2"]);
    let mut c = e.conn();
    for i in 0..200 {
        assert_eq!(
            text(&c.call(&["SET", &format!("k:{i}"), &format!("v{i}")])),
            "OK"
        );
    }
    let mut r = Replica::connect(e.port, None);
    r.sync();
    for f in &r.flows {
        f.wait_for("FULLSYNC_END", has_fullsync_end);
    }
    // Header and AUX fields in the recorded order; flow 0 carries shard-count and table-mem.
    let b0 = r.flows[0].bytes();
    assert!(b0.starts_with(b"REDIS0009\xFA\x09redis-ver\x066.2.11\xFA\x06df-ver\x0Adf-v1.40.1\xFA\x0Aredis-bits\xC0\x40"));
    let pos = |b: &[u8], s: &[u8]| b.windows(s.len()).position(|w| w == s);
    assert!(pos(&b0, b"shard-count").unwrap() < pos(&b0, b"table-mem").unwrap());
    assert!(pos(&b0, b"table-mem").unwrap() < pos(&b0, b"shard-id").unwrap());
    assert!(pos(&r.flows[1].bytes(), b"shard-count").is_none());
    r.start_stable();
    let mut next = Vec::new();
    for f in &r.flows {
        let b = f.wait_for("eof token", |b| {
            b.windows(40).any(|w| w == f.token.as_bytes())
        });
        let (_, lsn, rest) = split_trailer(&b, &f.token);
        assert_eq!(lsn, 1, "no writes since the journal started");
        assert!(rest.is_empty());
        next.push(lsn);
    }
    // Writes in stable sync arrive as Dragonfly journals them.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    c.call(&["SET", "ttl:key", "v", "EX", "100"]);
    c.call(&["EXPIRE", "k:1", "1000"]);
    c.call(&["MSET", "k:1", "a", "k:2", "b", "k:3", "c", "k:4", "d"]);
    c.call(&["SADD", "s", "1", "2", "3"]);
    c.call(&["SPOP", "s"]);
    c.call(&["UNLINK", "k:5"]);
    c.call(&["INCRBYFLOAT", "f", "0.1"]);
    c.call(&["MULTI"]);
    c.call(&["SET", "tx:a", "1"]);
    c.call(&["INCR", "tx:b"]);
    c.call(&["EXEC"]);
    let mut all = Vec::new();
    for f in &r.flows {
        let b = f.bytes();
        let (_, _, rest) = split_trailer(&b, &f.token);
        all.push(decode_journal(&rest));
    }
    // Wait until every write arrived (10 commands; MSET on both flows counts twice).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: usize = all.iter().map(|j| cmds_of(j).len()).sum();
        if n >= 11 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        all = r
            .flows
            .iter()
            .map(|f| decode_journal(&split_trailer(&f.bytes(), &f.token).2))
            .collect();
    }
    let joined: Vec<String> = all.iter().flat_map(|j| cmds_of(j)).collect();
    let set = joined
        .iter()
        .find(|c| c.starts_with("SET ttl:key v PXAT "))
        .expect("SET EX → PXAT");
    let at: u64 = set.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        at >= before + 100_000 && at < before + 110_000,
        "absolute expiry {at}"
    );
    assert!(
        joined.iter().any(|c| c.starts_with("PEXPIREAT k:1 ")),
        "{joined:?}"
    );
    assert!(
        joined.iter().any(|c| c.starts_with("SREM s ")),
        "SPOP → SREM: {joined:?}"
    );
    assert!(
        joined.iter().any(|c| c == "DEL k:5"),
        "UNLINK → DEL: {joined:?}"
    );
    assert!(
        joined.iter().any(|c| c == "INCRBYFLOAT f 0.1"),
        "{joined:?}"
    );
    // MSET is split per shard, each part with one shared non-zero txid.
    let mset: Vec<(u64, &Vec<Vec<u8>>)> = all
        .iter()
        .flatten()
        .filter_map(|j| match j {
            J::Cmd { txid, args, .. } if args[0] == b"MSET" => Some((*txid, args)),
            _ => None,
        })
        .collect();
    assert!(!mset.is_empty());
    let pairs: usize = mset.iter().map(|(_, a)| (a.len() - 1) / 2).sum();
    assert_eq!(pairs, 4);
    if mset.len() > 1 {
        assert!(mset.iter().all(|(t, _)| *t != 0 && *t == mset[0].0));
    }
    // MULTI/EXEC: both commands carry the same non-zero txid.
    let tx: Vec<u64> = all
        .iter()
        .flatten()
        .filter_map(|j| match j {
            J::Cmd { txid, args, .. } if args.get(1).is_some_and(|k| k.starts_with(b"tx:")) => {
                Some(*txid)
            }
            _ => None,
        })
        .collect();
    assert_eq!(tx.len(), 2);
    assert!(tx[0] != 0 && tx[0] == tx[1]);
    // Every flow starts with an LSN marker after its first entry; every COMMAND has a SELECT.
    for (i, j) in all.iter().enumerate() {
        if let Some(J::Cmd { .. }) = j.first() {
            assert_eq!(
                j.get(1),
                Some(&J::Lsn(next[i])),
                "flow {i}: marker after the first entry"
            );
        }
    }
    // ACKs show up in INFO replication.
    let counts: Vec<u64> = all.iter().map(|j| cmds_of(j).len() as u64).collect();
    for (i, f) in r.flows.iter_mut().enumerate() {
        f.ack(next[i] + counts[i]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let info = text(&c.call(&["INFO", "replication"]));
    assert_eq!(info_field(&info, "connected_slaves").as_deref(), Some("1"));
    assert!(info.contains("state=online"), "{info}");
    assert!(info.contains("port=7777"), "{info}");
    let acked = info_field(&info, "slave0_acked_lsns").unwrap();
    let want: Vec<String> = (0..2).map(|i| (next[i] + counts[i]).to_string()).collect();
    assert_eq!(acked, want.join(","));
    assert_eq!(
        info_field(&info, "master_lsns").unwrap(),
        want.join(","),
        "acked = master's next LSN"
    );
    assert!(info.contains("lag=0"), "{info}");
    // Closing the main connection tears the session down: the flows get closed.
    drop(r.main);
    for f in &r.flows {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !*f.closed.lock().unwrap() {
            assert!(
                Instant::now() < deadline,
                "flow not closed after the main connection closed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let info = text(&c.call(&["INFO", "replication"]));
    assert_eq!(info_field(&info, "connected_slaves").as_deref(), Some("0"));
}

#[test]
fn expired_keys_are_journaled_as_del() {
    let e = Emu::start(&["--shards", "1"]);
    let mut r = Replica::connect(e.port, None);
    r.sync();
    r.flows[0].wait_for("FULLSYNC_END", has_fullsync_end);
    r.start_stable();
    let mut c = e.conn();
    c.call(&["SET", "short", "x", "PX", "50"]);
    let f = &r.flows[0];
    let b = f.wait_for("DEL of the expired key", |b| {
        let t = f.token.as_bytes();
        b.windows(40).position(|w| w == t).is_some_and(|p| {
            cmds_of(&decode_journal(&b[p + 40..]))
                .iter()
                .any(|c| c == "DEL short")
        })
    });
    let cmds = cmds_of(&decode_journal(&split_trailer(&b, &f.token).2));
    assert!(cmds[0].starts_with("SET short x PXAT "), "{cmds:?}");
    assert_eq!(cmds[1], "DEL short");
}

#[test]
fn writes_during_full_sync_arrive_as_journal_blobs() {
    let e = Emu::start(&["--shards", "1", "--compression", "none"]);
    let mut c = e.conn();
    c.call(&["SET", "a", "1"]);
    let mut r = Replica::connect(e.port, None);
    r.sync();
    r.flows[0].wait_for("FULLSYNC_END", has_fullsync_end);
    c.call(&["SET", "during", "x"]);
    let blob = b"\xD2\x01\x14\x06\x00\x0A\x00\x01\x03\x0A\x03SET\x06during\x01x";
    r.flows[0].wait_for("the journal blob", |b| {
        b.windows(blob.len()).any(|w| w == blob)
    });
    r.start_stable();
    let f = &r.flows[0];
    let b = f.wait_for("eof token", |b| {
        b.windows(40).any(|w| w == f.token.as_bytes())
    });
    let (_, lsn, _) = split_trailer(&b, &f.token);
    assert_eq!(lsn, 2, "JOURNAL_OFFSET follows the blob's LSN");
}

#[test]
fn replica_that_reads_nothing_is_dropped_after_the_timeout() {
    let e = Emu::start(&[
        "--shards",
        "1",
        "--compression",
        "none",
        "--repl-timeout",
        "2",
    ]);
    // 40 MB: far more than the socket buffers can hold.
    let mut c = e.conn();
    let big = "x".repeat(100_000);
    for i in 0..400 {
        c.call(&["SET", &format!("big:{i}"), &big]);
    }
    let mut r = Replica::connect(e.port, None);
    // DFLY SYNC without reading the flow.
    let id = r.sync_id.clone();
    assert_eq!(text(&r.main.call(&["DFLY", "SYNC", &id])), "OK");
    let info = text(&c.call(&["INFO", "replication"]));
    assert_eq!(info_field(&info, "connected_slaves").as_deref(), Some("1"));
    let t0 = Instant::now();
    let mut gone = None;
    while t0.elapsed() < Duration::from_secs(15) {
        let info = text(&c.call(&["INFO", "replication"]));
        if info_field(&info, "connected_slaves").as_deref() == Some("0") {
            gone = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = gone.expect("the stalled replica was never dropped");
    assert!(
        gone >= Duration::from_millis(1500),
        "dropped too early: {gone:?}"
    );
    // Its main connection was closed by the master.
    r.main
        .s
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut tmp = [0u8; 16];
    assert!(matches!(r.main.s.read(&mut tmp), Ok(0) | Err(_)));
}

/// Collects the journal commands of a PARTIAL flow (raw journal, no RDB framing).
fn partial_cmds(f: &FlowConn, want: usize) -> Vec<String> {
    let b = f.wait_for("partial journal", |b| {
        cmds_of(&decode_journal(b)).len() >= want
    });
    cmds_of(&decode_journal(&b))
}

#[test]
fn partial_sync_inside_the_backlog_resumes_at_the_lsn_outside_gets_full() {
    let e = Emu::start(&["--shards", "1", "--backlog-entries", "10"]);
    let mut c = e.conn();
    let mut r = Replica::connect(e.port, None);
    r.sync();
    r.flows[0].wait_for("FULLSYNC_END", has_fullsync_end);
    r.start_stable();
    for i in 0..3 {
        c.call(&["SET", &format!("p{i}"), "v"]);
    }
    let f = &r.flows[0];
    f.wait_for("3 entries", |b| {
        b.windows(40)
            .position(|w| w == f.token.as_bytes())
            .is_some_and(|p| cmds_of(&decode_journal(&b[p + 40..])).len() == 3)
    });
    // The replica applied LSNs 1..=3, so it resumes from 4. Disconnect, write while away.
    drop(r);
    std::thread::sleep(Duration::from_millis(100));
    for i in 3..6 {
        c.call(&["SET", &format!("p{i}"), "v"]);
    }
    let mut r = Replica::connect(e.port, Some(&[4]));
    assert_eq!(r.flows[0].kind, "PARTIAL");
    r.flows[0].start_reading();
    r.start_stable();
    let cmds = partial_cmds(&r.flows[0], 3);
    assert_eq!(
        cmds,
        vec!["SET p3 v", "SET p4 v", "SET p5 v"],
        "served from LSN 4"
    );
    // The first entry carries the LSN marker with the asked LSN.
    let j = decode_journal(&r.flows[0].bytes());
    assert_eq!(j[1], J::Lsn(4));
    drop(r);
    std::thread::sleep(Duration::from_millis(100));
    // 20 more writes push LSN 4 out of the 10-entry backlog: FULL.
    for i in 0..20 {
        c.call(&["SET", &format!("q{i}"), "v"]);
    }
    let r = Replica::connect(e.port, Some(&[4]));
    assert_eq!(r.flows[0].kind, "FULL");
    // A master id from another master also gets FULL (we must compare ids ourselves).
    drop(r);
    let r = Replica::connect(e.port, Some(&[27]));
    assert_eq!(
        r.flows[0].kind, "PARTIAL",
        "the next LSN is always partial-able"
    );
}

#[test]
fn v134_partial_sync_goes_through_dfly_sync_with_journal_blobs() {
    let e = Emu::start(&["--shards", "1", "--version", "1.34"]);
    let mut c = e.conn();
    let mut r = Replica::connect(e.port, None);
    r.sync();
    r.flows[0].wait_for("FULLSYNC_END", has_fullsync_end);
    r.start_stable();
    c.call(&["SET", "a", "1"]);
    std::thread::sleep(Duration::from_millis(100));
    drop(r);
    std::thread::sleep(Duration::from_millis(100));
    c.call(&["SET", "b", "2"]);
    let mut r = Replica::connect(e.port, Some(&[2]));
    assert_eq!(r.flows[0].kind, "PARTIAL");
    r.sync();
    let f = &r.flows[0];
    let blob = b"\x06\x00\x0A\x00\x01\x03\x05\x03SET\x01b\x012";
    let b = f.wait_for("FULLSYNC_END", has_fullsync_end);
    assert!(b.starts_with(b"REDIS0009"));
    assert!(
        b.windows(blob.len()).any(|w| w == blob),
        "backlog entry as a journal blob"
    );
    r.start_stable();
    let f = &r.flows[0];
    let b = f.wait_for("eof token", |b| {
        b.windows(40).any(|w| w == f.token.as_bytes())
    });
    assert_eq!(split_trailer(&b, &f.token).1, 3);
}

#[test]
fn faults_close_flow_reject_auth_restart() {
    let e = Emu::start(&["--shards", "1", "--requirepass", "pw"]);
    let mut c = e.conn();
    assert!(c.call(&["GET", "x"]).is_error(), "NOAUTH before AUTH");
    assert_eq!(text(&c.call(&["AUTH", "pw"])), "OK");
    assert_eq!(
        text(&c.call(&["EMULATOR", "FAULT", "REJECT-AUTH", "ON"])),
        "OK"
    );
    let mut c2 = e.conn();
    assert_eq!(
        c2.call(&["AUTH", "pw"]),
        Value::Error(b"WRONGPASS invalid username-password pair or user is disabled.".to_vec())
    );
    assert_eq!(text(&c.call(&["EMULATOR", "FAULT", "CLEAR"])), "OK");
    // Close the flow after 100 bytes of stream.
    assert_eq!(
        text(&c.call(&["EMULATOR", "FAULT", "CLOSE-FLOW", "0", "BYTES", "100"])),
        "OK"
    );
    c.call(&["SET", "a", &"v".repeat(1000)]);
    let mut main = Client::new(e.port);
    assert_eq!(text(&main.call(&["AUTH", "pw"])), "OK");
    let capa = main.call(&["REPLCONF", "capa", "dragonfly"]);
    let capa = capa.as_array().unwrap();
    let (replid, sid) = (text(&capa[0]), text(&capa[1]));
    let mut fc = Client::new(e.port);
    assert_eq!(text(&fc.call(&["AUTH", "pw"])), "OK");
    let rep = fc.call(&["DFLY", "FLOW", &replid, &sid, "0"]);
    assert_eq!(text(&rep.as_array().unwrap()[0]), "FULL");
    // The session may be torn down before +OK arrives: do not wait for it.
    main.send(&[b"DFLY", b"SYNC", sid.as_bytes()]);
    let mut got = Vec::new();
    let _ = fc.s.read_to_end(&mut got);
    assert_eq!(got.len(), 100, "closed after exactly 100 bytes");
    // Restart: a new master id, old sessions gone, LSNs start again.
    c.call(&["EMULATOR", "FAULT", "CLEAR"]);
    let old = text(&c.call(&["EMULATOR", "MASTERID"]));
    assert_eq!(text(&c.call(&["EMULATOR", "FAULT", "RESTART"])), "OK");
    let new = text(&c.call(&["EMULATOR", "MASTERID"]));
    assert_ne!(old, new);
    assert_eq!(new.len(), 40);
    let bad = c.call(&["DFLY", "FLOW", &old, &sid, "0"]);
    assert_eq!(bad, Value::Error(b"ERR bad master id".to_vec()));
}

#[test]
fn benchmark_source_mode_reports_its_serving_rate() {
    let e = Emu::start(&["--shards", "2", "--bench-source", "--compression", "none"]);
    let mut c = e.conn();
    let v = "y".repeat(10_000);
    for i in 0..2000 {
        c.call(&["SET", &format!("b:{i}"), &v]);
    }
    let mut r = Replica::connect(e.port, None);
    let t = Instant::now();
    r.sync();
    let mut total = 0;
    for f in &r.flows {
        total += f.wait_for("FULLSYNC_END", has_fullsync_end).len();
    }
    let secs = t.elapsed().as_secs_f64();
    assert!(total > 20_000_000);
    let info = text(&c.call(&["INFO", "replication"]));
    let served: u64 = info_field(&info, "emulator_served_bytes")
        .unwrap()
        .parse()
        .unwrap();
    let micros: u64 = info_field(&info, "emulator_serve_micros")
        .unwrap()
        .parse()
        .unwrap();
    assert!(served as usize >= total - 1000);
    eprintln!(
        "benchmark source: {:.1} MB in {:.3} s incl. the replica's reads = {:.0} MB/s; emulator side {:.0} MB/s",
        total as f64 / 1e6,
        secs,
        total as f64 / 1e6 / secs,
        served as f64 / micros.max(1) as f64
    );
}
