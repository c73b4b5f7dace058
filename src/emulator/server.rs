//! The emulator's server: shared master state, the accept loop (one named thread per client
//! connection, blocking sockets), per-connection command dispatch (local replication and admin
//! commands, reads proxied to the backing redis-server, writes executed under one write lock
//! and journaled per shard), `INFO`, AUTH, MULTI/EXEC, and the expired-key listener.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::backend::Backend;
use super::journal::{self, Journal};
use super::proto::{ReadBuf, Value};
use super::rdbenc::{FrameOpts, SnapWriter};
use super::repl::{self, Session, SyncState};
use super::snapshot::{self, KeyEntry};
use super::writes;
use super::Config;

/// Flow id meaning "every flow" in fault settings.
pub const ALL_FLOWS: usize = usize::MAX;

/// Faults injected on demand (`EMULATOR FAULT …` or flags).
#[derive(Debug, Default)]
pub struct Faults {
    /// Close a flow after this many bytes of stream.
    pub close_bytes: HashMap<usize, u64>,
    /// Close a flow after this many journal entries.
    pub close_entries: HashMap<usize, u64>,
    /// Stall a flow's writer until this instant.
    pub stall_until: HashMap<usize, Instant>,
    /// Answer every AUTH with WRONGPASS.
    pub reject_auth: bool,
}

impl Faults {
    /// Byte limit of a flow.
    pub fn close_after_bytes(&self, flow: usize) -> Option<u64> {
        self.close_bytes
            .get(&flow)
            .or_else(|| self.close_bytes.get(&ALL_FLOWS))
            .copied()
    }

    /// Entry limit of a flow.
    pub fn close_after_entries(&self, flow: usize) -> Option<u64> {
        self.close_entries
            .get(&flow)
            .or_else(|| self.close_entries.get(&ALL_FLOWS))
            .copied()
    }

    fn stalled(&self, flow: usize) -> bool {
        let now = Instant::now();
        [flow, ALL_FLOWS]
            .iter()
            .any(|f| self.stall_until.get(f).is_some_and(|t| *t > now))
    }
}

/// What `COMMAND` says about one command of the backing server.
#[derive(Debug, Clone)]
pub struct CmdSpec {
    /// Redis arity: exact argument count when positive, minimum when negative.
    pub arity: i64,
    /// Has the `write` flag.
    pub write: bool,
    /// First key position (0 = none).
    pub first: i64,
    /// Last key position (negative = from the end).
    pub last: i64,
    /// Key step.
    pub step: i64,
}

impl CmdSpec {
    /// Key positions in `args` by the first/last/step rule.
    pub fn keys<'a>(&self, args: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
        if self.first <= 0 || self.step <= 0 {
            return Vec::new();
        }
        let n = args.len() as i64;
        let last = if self.last < 0 {
            n + self.last
        } else {
            self.last.min(n - 1)
        };
        let mut v = Vec::new();
        let mut i = self.first;
        while i <= last && i < n {
            v.push(args[i as usize].as_slice());
            i += self.step;
        }
        v
    }
}

/// State shared by every thread of the emulator.
pub struct Master {
    /// Resolved configuration.
    pub cfg: Config,
    /// `host:port` of the backing redis-server.
    pub backend_addr: String,
    /// Current master id (changes on a simulated restart).
    pub replid: Mutex<String>,
    /// Held while a write executes on the backend and is journaled, so the journal order is
    /// the order writes were applied.
    pub write_lock: Mutex<()>,
    /// Per-shard journal and backlog.
    pub journal: Journal,
    /// Replica sessions by sync id.
    pub sessions: Mutex<BTreeMap<u64, Arc<Session>>>,
    /// Next sync id.
    pub next_sync: AtomicU64,
    /// Injected faults.
    pub faults: Mutex<Faults>,
    /// Command table of the backing server (upper-case names).
    pub cmds: HashMap<Vec<u8>, CmdSpec>,
    /// Last benchmark-source serving figures: bytes, microseconds.
    pub serving: Mutex<(u64, u64)>,
    /// Set to stop the accept loop.
    pub quit: AtomicBool,
}

/// Dragonfly's key → shard map: `XXH64(key, seed 120577240643) mod N`
/// (`dragonfly src/server/engine_shard_set.cc (Shard)`, without cluster hashtag locking, the
/// default), so a key travels over the same flow number as on a real master of N shards.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    const SEED: u64 = 120_577_240_643;
    (xxhash_rust::xxh64::xxh64(key, SEED) % shards.max(1) as u64) as usize
}

impl Master {
    /// Builds the state: reads the backing server's command table.
    pub fn new(cfg: Config, backend_addr: String) -> io::Result<Master> {
        let mut be = Backend::connect(&backend_addr)?;
        let table = be.call(&["COMMAND"])?;
        let mut cmds = HashMap::new();
        for c in table.as_array().unwrap_or(&[]) {
            let Some(a) = c.as_array() else { continue };
            // Container commands (XGROUP, …) carry their flags and key positions on their
            // subcommands (element 10 of the entry, Redis 7): listed as `XGROUP|CREATE`.
            let subs = a.get(9).and_then(Value::as_array).unwrap_or(&[]);
            let entries = std::iter::once(a).chain(subs.iter().filter_map(Value::as_array));
            for e in entries {
                let Some(name) = e.first().and_then(Value::as_bytes) else {
                    continue;
                };
                let flags = e.get(2).and_then(Value::as_array).unwrap_or(&[]);
                let write = flags.iter().any(|f| f.as_bytes() == Some(b"write"));
                let num = |i: usize| e.get(i).and_then(Value::as_int).unwrap_or(0);
                cmds.insert(
                    name.to_ascii_uppercase(),
                    CmdSpec {
                        arity: num(1),
                        write,
                        first: num(3),
                        last: num(4),
                        step: num(5),
                    },
                );
            }
        }
        let replid = cfg.master_id.clone().unwrap_or_else(repl::random_hex40);
        let journal = Journal::new(cfg.shards, cfg.backlog_entries);
        Ok(Master {
            cfg,
            backend_addr,
            replid: Mutex::new(replid),
            write_lock: Mutex::new(()),
            journal,
            sessions: Mutex::new(BTreeMap::new()),
            next_sync: AtomicU64::new(1),
            faults: Mutex::new(Faults::default()),
            cmds,
            serving: Mutex::new((0, 0)),
            quit: AtomicBool::new(false),
        })
    }

    /// The shard of a key.
    pub fn shard(&self, key: &[u8]) -> usize {
        shard_of(key, self.cfg.shards)
    }

    /// A snapshot writer with the configured framing.
    pub fn snap_writer(&self) -> SnapWriter {
        SnapWriter::new(FrameOpts {
            compression: self.cfg.compression,
            tagged: self.cfg.tagged_chunks,
            chunk_size: self.cfg.chunk_size,
            flush_size: self.cfg.chunk_size.clamp(8 * 1024, 64 * 1024),
        })
    }

    /// The whole keyspace by shard (caller holds the write lock).
    pub fn read_keyspace(&self) -> io::Result<Vec<Vec<KeyEntry>>> {
        let mut be = Backend::connect(&self.backend_addr)?;
        let shards = self.cfg.shards;
        snapshot::read_keyspace(&mut be, shards, |k| shard_of(k, shards))
    }

    /// The backing server's `used_memory`.
    pub fn backend_used_memory(&self) -> u64 {
        let Ok(mut be) = Backend::connect(&self.backend_addr) else {
            return 0;
        };
        let Ok(v) = be.call(&["INFO", "memory"]) else {
            return 0;
        };
        let text = String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Blocks while a stall fault is active on `flow` (or the session ends).
    pub fn wait_while_stalled(&self, flow: usize, cancelled: &AtomicBool) {
        while self.faults.lock().stalled(flow) && !cancelled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Records a benchmark-source serving measurement.
    pub fn record_serving(&self, bytes: u64, took: Duration) {
        let mut s = self.serving.lock();
        s.0 += bytes;
        s.1 = s.1.max(took.as_micros() as u64);
    }

    /// Appends journal items produced by one write (the write lock is held by the caller).
    pub fn journal_items(&self, items: Vec<writes::JItem>, txid: Option<u64>) {
        if items.is_empty() || !self.journal.enabled() {
            return;
        }
        let mut shards: Vec<usize> = items.iter().map(|i| i.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        let global = items.iter().any(|i| i.tx);
        let txid = match txid {
            Some(t) => t,
            None if shards.len() > 1 || global => self.journal.draw_txid(),
            None => 0,
        };
        // v1.38+ writes shard_cnt 1 always; older releases the number of shards touched.
        let shard_cnt = match self.cfg.version {
            super::Ver::V1_40 => 1,
            super::Ver::V1_34 => shards.len() as u64,
        };
        for it in items {
            let bytes = journal::encode_command(it.db, it.op, txid, shard_cnt, &it.args);
            self.journal.append(it.shard, it.db, bytes, it.keys);
        }
    }

    /// Cancels every session (master restart, close-main fault).
    pub fn cancel_all(&self, why: &str) {
        let all: Vec<_> = self.sessions.lock().values().cloned().collect();
        for s in all {
            s.cancel(self, why);
        }
    }

    /// The `# Replication` INFO section: sessions, their flows' acked LSNs, the master LSNs.
    pub fn info_replication(&self) -> String {
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        let lsns = self.journal.next_lsns();
        let mut s = String::from("# Replication\r\nrole:master\r\n");
        let live: Vec<_> = sessions
            .iter()
            .filter(|s| !s.cancelled.load(Ordering::SeqCst))
            .collect();
        s.push_str(&format!("connected_slaves:{}\r\n", live.len()));
        for (i, sess) in live.iter().enumerate() {
            let state = match *sess.state.lock() {
                SyncState::Preparation => "preparation",
                SyncState::FullSync => "full_sync",
                SyncState::StableSync => "online",
                SyncState::Cancelled => "cancelled",
            };
            let flows = sess.flows.lock().clone();
            let acks: Vec<u64> = flows
                .iter()
                .map(|f| f.as_ref().map_or(0, |f| f.acked.load(Ordering::Relaxed)))
                .collect();
            let lag: u64 = acks
                .iter()
                .zip(&lsns)
                .map(|(a, l)| l.saturating_sub(*a))
                .sum();
            s.push_str(&format!(
                "slave{i}:ip={},port={},state={state},lag={lag}\r\n",
                sess.ip, sess.port
            ));
            let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            s.push_str(&format!("slave{i}_sync_id:SYNC{}\r\n", sess.id));
            s.push_str(&format!("slave{i}_acked_lsns:{}\r\n", join(&acks)));
            let sent: Vec<u64> = flows
                .iter()
                .map(|f| {
                    f.as_ref()
                        .map_or(0, |f| f.bytes_sent.load(Ordering::Relaxed))
                })
                .collect();
            s.push_str(&format!("slave{i}_bytes_sent:{}\r\n", join(&sent)));
            // How each flow was answered, so tests can tell a PARTIAL resume from a FULL one.
            let kinds: Vec<&str> = flows
                .iter()
                .map(|f| match f {
                    Some(f) if f.partial => "partial",
                    Some(_) => "full",
                    None => "none",
                })
                .collect();
            s.push_str(&format!("slave{i}_flow_kinds:{}\r\n", kinds.join(",")));
        }
        s.push_str(&format!("master_replid:{}\r\n", self.replid.lock()));
        s.push_str(&format!(
            "master_lsns:{}\r\n",
            lsns.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
        let (bytes, micros) = *self.serving.lock();
        if bytes > 0 {
            s.push_str(&format!(
                "emulator_served_bytes:{bytes}\r\nemulator_serve_micros:{micros}\r\n"
            ));
        }
        s
    }
}

/// Per-connection state.
struct Conn {
    stream: TcpStream,
    peer_ip: String,
    rbuf: ReadBuf,
    out: Vec<u8>,
    be: Option<Backend>,
    db: u32,
    authed: bool,
    multi: Option<Vec<Vec<Vec<u8>>>>,
    listening_port: u16,
    announced_ip: Option<String>,
    session: Option<Arc<Session>>,
    /// The client switched to RESP3 (`HELLO 3`): `be` speaks RESP3 too, so replies go back in
    /// the client's protocol; the reads journaling needs run on `aux`, a RESP2 connection.
    resp3: bool,
    aux: Option<Backend>,
}

/// Runs the accept loop until `quit` is set.
pub fn serve(m: Arc<Master>, listener: TcpListener) -> io::Result<()> {
    spawn_expiry_listener(m.clone());
    let mut n = 0u64;
    for s in listener.incoming() {
        if m.quit.load(Ordering::SeqCst) {
            break;
        }
        let stream = match s {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept: {e}");
                continue;
            }
        };
        n += 1;
        let m2 = m.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{n}"))
            .spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let _ = stream.set_nodelay(true);
                let mut c = Conn {
                    stream,
                    peer_ip: peer,
                    rbuf: ReadBuf::default(),
                    out: Vec::new(),
                    be: None,
                    db: 0,
                    authed: m2.cfg.requirepass.is_none(),
                    multi: None,
                    listening_port: 0,
                    announced_ip: None,
                    session: None,
                    resp3: false,
                    aux: None,
                };
                if let Err(e) = run_conn(&m2, &mut c) {
                    log::debug!("connection ended: {e}");
                }
                if let Some(s) = c.session.take() {
                    s.cancel(&m2, "main connection closed");
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot spawn a connection thread: {e}");
        }
    }
    Ok(())
}

/// What to do after a command.
enum Next {
    Reply(Value),
    /// No reply at all (`REPLCONF ACK` outside a flow, as Dragonfly does).
    Silent,
    /// The connection became a flow: stop the command loop.
    BecameFlow,
    Close(Value),
}

fn run_conn(m: &Arc<Master>, c: &mut Conn) -> io::Result<()> {
    loop {
        let parsed = super::proto::parse_request(c.rbuf.pending());
        match parsed {
            Ok(Some((args, n))) => {
                c.rbuf.consume(n);
                if args.is_empty() {
                    continue;
                }
                match dispatch(m, c, args) {
                    Next::Reply(v) => v.encode(&mut c.out),
                    Next::Silent => {}
                    Next::Close(v) => {
                        v.encode(&mut c.out);
                        c.stream.write_all(&c.out)?;
                        return Ok(());
                    }
                    Next::BecameFlow => return Ok(()),
                }
                if c.out.len() > 1 << 20 {
                    c.stream.write_all(&c.out)?;
                    c.out.clear();
                }
            }
            Ok(None) => {
                if !c.out.is_empty() {
                    c.stream.write_all(&c.out)?;
                    c.out.clear();
                }
                if c.rbuf.fill(&mut c.stream)? == 0 {
                    return Ok(());
                }
            }
            Err(e) => {
                let v = Value::err(&format!("Protocol error: {}", e.what));
                v.encode(&mut c.out);
                let _ = c.stream.write_all(&c.out);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

fn backend<'a>(m: &Master, c: &'a mut Conn) -> io::Result<&'a mut Backend> {
    if c.be.is_none() {
        let mut be = Backend::connect(&m.backend_addr)?;
        if c.resp3 {
            be.call(&["HELLO", "3"])?;
        }
        if c.db != 0 {
            be.call(&[b"SELECT".to_vec(), c.db.to_string().into_bytes()])?;
        }
        c.be = Some(be);
    }
    c.be.as_mut().ok_or_else(|| io::Error::other("no backend"))
}

/// The connections a write runs on (see `writes::Conns`).
fn conns<'a>(m: &Master, c: &'a mut Conn) -> io::Result<writes::Conns<'a>> {
    backend(m, c)?;
    if c.resp3 && c.aux.is_none() {
        let mut be = Backend::connect(&m.backend_addr)?;
        if c.db != 0 {
            be.call(&[b"SELECT".to_vec(), c.db.to_string().into_bytes()])?;
        }
        c.aux = Some(be);
    }
    let main =
        c.be.as_mut()
            .ok_or_else(|| io::Error::other("no backend"))?;
    let side = if c.resp3 { c.aux.as_mut() } else { None };
    Ok(writes::Conns { main, side })
}

fn upper(b: &[u8]) -> Vec<u8> {
    b.to_ascii_uppercase()
}

fn dispatch(m: &Arc<Master>, c: &mut Conn, args: Vec<Vec<u8>>) -> Next {
    let name = upper(&args[0]);
    if name == b"AUTH" {
        return Next::Reply(auth(m, c, &args));
    }
    if name == b"HELLO" {
        return Next::Reply(hello(m, c, &args));
    }
    if !c.authed {
        return Next::Reply(Value::err("NOAUTH Authentication required."));
    }
    if c.multi.is_some() && !matches!(name.as_slice(), b"EXEC" | b"DISCARD" | b"MULTI") {
        if !m.cmds.contains_key(&name) {
            return Next::Reply(Value::err(&format!(
                "unknown command '{}'",
                String::from_utf8_lossy(&args[0])
            )));
        }
        if let Some(q) = c.multi.as_mut() {
            q.push(args);
        }
        return Next::Reply(Value::Simple(b"QUEUED".to_vec()));
    }
    let r = match name.as_slice() {
        b"PING" if args.len() == 1 => Value::Simple(b"PONG".to_vec()),
        b"PING" => Value::bulk(args[1].clone()),
        b"QUIT" => return Next::Close(Value::ok()),
        b"HELLO" => hello(m, c, &args),
        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"MONITOR" | b"SYNC" | b"PSYNC"
        | b"WATCH" => Value::err("this command is not supported by dfly-emulator"),
        b"REPLCONF" if args.len() == 3 && args[1].eq_ignore_ascii_case(b"ACK") => {
            log::warn!(
                "REPLCONF ACK on a connection that is not a flow: no replication flow assigned"
            );
            return Next::Silent;
        }
        b"REPLCONF" => replconf(m, c, &args),
        b"DFLY" => return dfly(m, c, args),
        b"INFO" => info(m, c, &args),
        b"EMULATOR" => emulator_cmd(m, c, &args),
        b"MULTI" => {
            if c.multi.is_some() {
                Value::err("MULTI calls can not be nested")
            } else {
                c.multi = Some(Vec::new());
                Value::ok()
            }
        }
        b"DISCARD" => match c.multi.take() {
            Some(_) => Value::ok(),
            None => Value::err("DISCARD without MULTI"),
        },
        b"EXEC" => match c.multi.take() {
            Some(q) => exec(m, c, q),
            None => Value::err("EXEC without MULTI"),
        },
        b"SELECT" => select(m, c, &args),
        _ => run_one(m, c, &args, None),
    };
    Next::Reply(r)
}

/// `HELLO [2 [AUTH user pass] [SETNAME name]]`: RESP2 only (the emulator's parser and its
/// backend connections speak RESP2), answered locally like Dragonfly's map as a flat array.
fn hello(m: &Master, c: &mut Conn, args: &[Vec<u8>]) -> Value {
    let proto3 = match args.get(1).map(Vec::as_slice) {
        None => c.resp3,
        Some(b"2") => false,
        Some(b"3") => true,
        Some(_) => return Value::err("NOPROTO sorry, this protocol version is not supported."),
    };
    let mut i = 2;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
            let r = auth(
                m,
                c,
                &[b"AUTH".to_vec(), args[i + 1].clone(), args[i + 2].clone()],
            );
            if r.is_error() {
                return r;
            }
            i += 3;
        } else if args[i].eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
            i += 2;
        } else {
            return Value::err("syntax error");
        }
    }
    if !c.authed {
        return Value::err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if proto3 != c.resp3 {
        // Reconnect the proxy connection in the new protocol (lazily, on the next command).
        c.resp3 = proto3;
        c.be = None;
        c.aux = None;
    }
    let s = |x: &str| Value::bulk(x.as_bytes().to_vec());
    let fields = vec![
        (s("server"), s("redis")),
        (s("version"), s("7.4.0")),
        (s("dragonfly_version"), s(m.cfg.version.df_ver())),
        (s("proto"), Value::Int(if proto3 { 3 } else { 2 })),
        (s("id"), Value::Int(1)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Value::Array(Some(Vec::new()))),
    ];
    if proto3 {
        Value::Map(fields)
    } else {
        Value::Array(Some(fields.into_iter().flat_map(|(k, v)| [k, v]).collect()))
    }
}

fn auth(m: &Master, c: &mut Conn, args: &[Vec<u8>]) -> Value {
    if m.faults.lock().reject_auth {
        return Value::err("WRONGPASS invalid username-password pair or user is disabled.");
    }
    let Some(pass) = &m.cfg.requirepass else {
        return Value::err("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    };
    let ok = match args.len() {
        2 => args[1] == pass.as_bytes(),
        3 => args[1] == b"default" && args[2] == pass.as_bytes(),
        _ => return Value::err("wrong number of arguments for 'auth' command"),
    };
    if ok {
        c.authed = true;
        Value::ok()
    } else {
        Value::err("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

/// Sends a command to the backend and returns its reply (errors become error replies).
fn proxy(m: &Master, c: &mut Conn, args: &[Vec<u8>]) -> Value {
    match backend(m, c).and_then(|be| be.call(args)) {
        Ok(v) => v,
        Err(e) => {
            c.be = None;
            Value::err(&format!("backend: {e}"))
        }
    }
}

/// Runs one client command: a write under the write lock (journaled), or a read.
fn run_one(m: &Master, c: &mut Conn, args: &[Vec<u8>], txid: Option<u64>) -> Value {
    let name = upper(&args[0]);
    let Some(mut spec) = m.cmds.get(&name).cloned() else {
        return Value::err(&format!(
            "unknown command '{}'",
            String::from_utf8_lossy(&args[0])
        ));
    };
    // A write subcommand with a key (`XGROUP CREATE key …`) is journaled like any write
    // command: Dragonfly journals `XGROUP CREATE|SETID|CREATECONSUMER|…` as sent.
    if let Some(sub) = args.get(1) {
        let mut full = name.clone();
        full.push(b'|');
        full.extend_from_slice(&upper(sub));
        if let Some(s) = m.cmds.get(&full).filter(|s| s.write && s.first > 0) {
            spec = s.clone();
        }
    }
    let n = args.len() as i64;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        return Value::err(&format!(
            "wrong number of arguments for '{}' command",
            String::from_utf8_lossy(&args[0]).to_lowercase()
        ));
    }
    if writes::is_blocking(&name) {
        return blocking(m, c, args);
    }
    if !spec.write && !writes::is_special(&name) {
        return proxy(m, c, args);
    }
    let db = c.db;
    let mut cx = match conns(m, c) {
        Ok(b) => b,
        Err(e) => return Value::err(&format!("backend: {e}")),
    };
    let _w = m.write_lock.lock();
    match writes::execute(m, &mut cx, db, &name, args, &spec) {
        Ok((reply, items)) => {
            m.journal_items(items, txid);
            reply
        }
        Err(e) => {
            c.be = None;
            Value::err(&format!("backend: {e}"))
        }
    }
}

/// Blocking pops, emulated by polling their non-blocking form (the write lock is never held
/// while waiting).
fn blocking(m: &Master, c: &mut Conn, args: &[Vec<u8>]) -> Value {
    let name = upper(&args[0]);
    let timeout = writes::blocking_timeout(&name, args);
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let db = c.db;
        let mut cx = match conns(m, c) {
            Ok(b) => b,
            Err(e) => return Value::err(&format!("backend: {e}")),
        };
        let r = {
            let _w = m.write_lock.lock();
            writes::execute_blocking_once(m, &mut cx, db, &name, args)
        };
        match r {
            Ok(Some((reply, items))) => {
                m.journal_items(items, None);
                return reply;
            }
            Ok(None) => {}
            Err(e) => {
                c.be = None;
                return Value::err(&format!("backend: {e}"));
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let nil = if name.starts_with(b"BZPOP")
                || name == b"BLPOP"
                || name == b"BRPOP"
                || name.ends_with(b"MPOP")
            {
                Value::Array(None)
            } else {
                Value::Bulk(None)
            };
            return if c.resp3 { nil.into_resp3() } else { nil };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `SELECT n`: forwarded, and remembered for journaling when the backend accepts it.
fn select(m: &Master, c: &mut Conn, args: &[Vec<u8>]) -> Value {
    let Some(db) = args
        .get(1)
        .filter(|_| args.len() == 2)
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|s| s.parse::<u32>().ok())
    else {
        return Value::err("invalid DB index");
    };
    let r = proxy(m, c, args);
    if r.as_bytes() == Some(b"OK") {
        c.db = db;
        c.aux = None;
    }
    r
}

fn exec(m: &Master, c: &mut Conn, q: Vec<Vec<Vec<u8>>>) -> Value {
    let txid = if m.journal.enabled() {
        Some(m.journal.draw_txid())
    } else {
        None
    };
    let mut replies = Vec::with_capacity(q.len());
    for args in q {
        let name = upper(&args[0]);
        let r = if name == b"SELECT" {
            select(m, c, &args)
        } else {
            run_one(m, c, &args, txid)
        };
        replies.push(r);
    }
    Value::Array(Some(replies))
}

fn replconf(m: &Master, c: &mut Conn, args: &[Vec<u8>]) -> Value {
    if args.len() < 3 || args.len() % 2 == 0 {
        return Value::err("syntax error");
    }
    if args.len() == 3 && args[1].eq_ignore_ascii_case(b"capa") && args[2] == b"dragonfly" {
        let id = m.next_sync.fetch_add(1, Ordering::SeqCst);
        let replid = m.replid.lock().clone();
        let ip = c.announced_ip.clone().unwrap_or_else(|| c.peer_ip.clone());
        let sess = Arc::new(Session::new(
            id,
            replid.clone(),
            ip,
            c.listening_port,
            m.cfg.shards,
            c.stream.try_clone().ok(),
        ));
        m.sessions.lock().insert(id, sess.clone());
        c.session = Some(sess);
        return repl::capa_reply(m, &replid, id);
    }
    for p in args[1..].chunks(2) {
        let (k, v) = (&p[0], &p[1]);
        if k.eq_ignore_ascii_case(b"listening-port") {
            match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
                Some(port) => c.listening_port = port,
                None => return Value::err("value is not an integer or out of range"),
            }
        } else if k.eq_ignore_ascii_case(b"ip-address") {
            c.announced_ip = Some(String::from_utf8_lossy(v).into_owned());
        } else if k.eq_ignore_ascii_case(b"client-version") {
            if std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .is_none()
            {
                return Value::err("value is not an integer or out of range");
            }
        } else if !(k.eq_ignore_ascii_case(b"capa") || k.eq_ignore_ascii_case(b"client-id")) {
            return Value::err("syntax error");
        }
    }
    Value::ok()
}

fn dfly(m: &Arc<Master>, c: &mut Conn, args: Vec<Vec<u8>>) -> Next {
    let sub = args.get(1).map(|s| upper(s)).unwrap_or_default();
    match sub.as_slice() {
        b"FLOW" => match repl::dfly_flow(m, &args, &c.stream) {
            Ok((sess, flow, reply)) => {
                reply.encode(&mut c.out);
                if let Err(e) = c.stream.write_all(&c.out) {
                    sess.cancel(m, &format!("flow {}: {e}", flow.id));
                    return Next::BecameFlow;
                }
                c.out.clear();
                let stream = match c.stream.try_clone() {
                    Ok(s) => s,
                    Err(e) => {
                        sess.cancel(m, &format!("flow {}: {e}", flow.id));
                        return Next::BecameFlow;
                    }
                };
                let rbuf = std::mem::take(&mut c.rbuf);
                repl::flow_reader(m, &sess, &flow, stream, rbuf);
                Next::BecameFlow
            }
            Err(v) => Next::Reply(v),
        },
        b"SYNC" if args.len() == 3 => Next::Reply(repl::dfly_sync(m, &args[2])),
        b"STARTSTABLE" if args.len() == 3 => Next::Reply(repl::dfly_startstable(m, &args[2])),
        b"REPLICAOFFSET" => Next::Reply(Value::Array(Some(
            m.journal
                .next_lsns()
                .into_iter()
                .map(|l| Value::Int(l as i64))
                .collect(),
        ))),
        _ => Next::Reply(Value::err("syntax error")),
    }
}

fn info(m: &Master, c: &mut Conn, args: &[Vec<u8>]) -> Value {
    let section = args
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    if section == b"replication" {
        return Value::bulk(m.info_replication().into_bytes());
    }
    let r = proxy(m, c, args);
    let Some(text) = r.as_bytes() else { return r };
    let mut text = String::from_utf8_lossy(text).into_owned();
    if let Some(p) = text.find("# Server\r\n") {
        let at = p + "# Server\r\n".len();
        text.insert_str(
            at,
            &format!("dragonfly_version:{}\r\n", m.cfg.version.df_ver()),
        );
    }
    if let Some(p) = text.find("# Replication\r\n") {
        let end = text[p + 2..]
            .find("\r\n# ")
            .map(|e| p + 2 + e + 2)
            .unwrap_or(text.len());
        text.replace_range(p..end, &m.info_replication());
    }
    Value::bulk(text.into_bytes())
}

fn parse_flow(b: &[u8]) -> Option<usize> {
    if b == b"*" {
        return Some(ALL_FLOWS);
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn num(b: Option<&Vec<u8>>) -> Option<u64> {
    std::str::from_utf8(b?).ok()?.parse().ok()
}

/// `EMULATOR …`: admin and fault injection.
fn emulator_cmd(m: &Master, _c: &mut Conn, args: &[Vec<u8>]) -> Value {
    let sub = args.get(1).map(|s| upper(s)).unwrap_or_default();
    match sub.as_slice() {
        b"BACKEND" => Value::bulk(m.backend_addr.clone().into_bytes()),
        b"MASTERID" => Value::bulk(m.replid.lock().clone().into_bytes()),
        b"PING-JOURNAL" => {
            // What WAIT does on v1.40: one PING entry per shard.
            let _w = m.write_lock.lock();
            for s in 0..m.cfg.shards {
                m.journal.append(s, 0, vec![journal::OP_PING], Vec::new());
            }
            Value::ok()
        }
        b"FAULT" => {
            let what = args.get(2).map(|s| upper(s)).unwrap_or_default();
            let mut f = m.faults.lock();
            match what.as_slice() {
                b"CLOSE-FLOW" => {
                    let (Some(flow), Some(kind), Some(n)) =
                        (args.get(3).and_then(|b| parse_flow(b)), args.get(4).map(|s| upper(s)), num(args.get(5)))
                    else {
                        return Value::err("usage: EMULATOR FAULT CLOSE-FLOW <flow|*> BYTES|ENTRIES <n>");
                    };
                    match kind.as_slice() {
                        b"BYTES" => f.close_bytes.insert(flow, n),
                        b"ENTRIES" => f.close_entries.insert(flow, n),
                        _ => return Value::err("usage: EMULATOR FAULT CLOSE-FLOW <flow|*> BYTES|ENTRIES <n>"),
                    };
                    Value::ok()
                }
                b"STALL-FLOW" => {
                    let (Some(flow), Some(ms)) = (args.get(3).and_then(|b| parse_flow(b)), num(args.get(4))) else {
                        return Value::err("usage: EMULATOR FAULT STALL-FLOW <flow|*> <ms>");
                    };
                    f.stall_until.insert(flow, Instant::now() + Duration::from_millis(ms));
                    Value::ok()
                }
                b"REJECT-AUTH" => {
                    f.reject_auth = args.get(3).map(|s| upper(s)).as_deref() != Some(b"OFF".as_slice());
                    Value::ok()
                }
                b"CLOSE-MAIN" => {
                    drop(f);
                    let all: Vec<_> = m.sessions.lock().values().cloned().collect();
                    for s in all {
                        if let Some(st) = s.main.lock().as_ref() {
                            let _ = st.shutdown(Shutdown::Both);
                        }
                    }
                    Value::ok()
                }
                b"RESTART" => {
                    drop(f);
                    *m.replid.lock() = repl::random_hex40();
                    m.cancel_all("master restarted (fault)");
                    m.journal.reset();
                    Value::ok()
                }
                b"CLEAR" => {
                    *f = Faults::default();
                    Value::ok()
                }
                _ => Value::err("unknown fault; try CLOSE-FLOW, STALL-FLOW, REJECT-AUTH, CLOSE-MAIN, RESTART, CLEAR"),
            }
        }
        _ => Value::err("unknown EMULATOR subcommand; try BACKEND, MASTERID, PING-JOURNAL, FAULT"),
    }
}

/// Listens for expired-key events on the backend and journals them as deletions, the way
/// Dragonfly journals expiry (`DEL` as COMMAND on v1.38+, EXPIRED before).
fn spawn_expiry_listener(m: Arc<Master>) {
    let r = std::thread::Builder::new()
        .name("expiry".into())
        .spawn(move || {
            let run = || -> io::Result<()> {
                let mut sub = Backend::connect(&m.backend_addr)?;
                let mut check = Backend::connect(&m.backend_addr)?;
                sub.call(&["PSUBSCRIBE", "__keyevent@*__:expired"])?;
                let mut check_db = 0u32;
                loop {
                    let msg = sub.read()?;
                    let Some(a) = msg.as_array() else { continue };
                    let (Some(ch), Some(key)) = (
                        a.get(2).and_then(Value::as_bytes),
                        a.get(3).and_then(Value::as_bytes),
                    ) else {
                        continue;
                    };
                    let db: u32 = String::from_utf8_lossy(ch)
                        .strip_prefix("__keyevent@")
                        .and_then(|r| r.split("__").next())
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0);
                    let _w = m.write_lock.lock();
                    if db != check_db {
                        check.call(&[b"SELECT".to_vec(), db.to_string().into_bytes()])?;
                        check_db = db;
                    }
                    // A key re-created right after it expired must not be deleted on the replica.
                    if check.call(&[b"EXISTS".as_slice(), key])?.as_int() == Some(1) {
                        continue;
                    }
                    let op = match m.cfg.version {
                        super::Ver::V1_40 => journal::OP_COMMAND,
                        super::Ver::V1_34 => journal::OP_EXPIRED,
                    };
                    let item = writes::JItem {
                        shard: m.shard(key),
                        db,
                        op,
                        args: vec![b"DEL".to_vec(), key.to_vec()],
                        keys: vec![key.to_vec()],
                        tx: false,
                    };
                    m.journal_items(vec![item], Some(0));
                }
            };
            if let Err(e) = run() {
                log::warn!("expiry listener stopped: {e}");
            }
        });
    if let Err(e) = r {
        log::error!("cannot spawn the expiry listener: {e}");
    }
}
