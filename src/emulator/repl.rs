//! The master side of replication: sessions (`REPLCONF capa dragonfly`), `DFLY FLOW`,
//! `DFLY SYNC`, `DFLY STARTSTABLE`, one writer thread per flow (snapshot with interleaved
//! journal blobs, FULLSYNC_END, trailer, then the live journal with LSN markers), ACK
//! tracking, the replication timeout and teardown when any connection of a session closes.
//!
//! The state machine is Dragonfly's (`dragonfly src/server/dflycmd.cc`):
//! PREPARATION → (SYNC) FULL_SYNC → (STARTSTABLE) STABLE_SYNC, or PREPARATION → (STARTSTABLE,
//! every flow PARTIAL, v1.35+) STABLE_SYNC; any state → CANCELLED.

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::journal::{self, Read};
use super::proto::{ReadBuf, Value};
use super::rdbenc::{put_pu, SnapWriter};
use super::server::Master;
use super::snapshot::KeyEntry;
use super::Ver;

/// Session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Flows are being connected.
    Preparation,
    /// The snapshot is being sent.
    FullSync,
    /// The journal is being streamed.
    StableSync,
    /// Torn down.
    Cancelled,
}

/// One flow connection of a session.
pub struct Flow {
    /// Flow (= shard) index.
    pub id: usize,
    /// Answered PARTIAL.
    pub partial: bool,
    /// The LSN asked for (partial) or 0.
    pub start_lsn: u64,
    /// The 40-char eof token.
    pub token: String,
    /// The socket (a clone; the connection thread keeps reading ACKs on its own).
    pub stream: TcpStream,
    /// Last `REPLCONF ACK` value.
    pub acked: AtomicU64,
    /// Bytes written on the flow after the FLOW reply.
    pub bytes_sent: AtomicU64,
    /// Journal entries written (blobs and stable entries).
    pub entries_sent: AtomicU64,
    /// FULLSYNC_END written.
    pub fullsync_done: AtomicBool,
    /// JOURNAL_OFFSET/EOF/token written (or not needed).
    pub stable_started: AtomicBool,
}

/// One replica's session.
pub struct Session {
    /// The `k` of `SYNC<k>`.
    pub id: u64,
    /// The master id the session was created under.
    pub replid: String,
    /// Replica address as announced / seen.
    pub ip: String,
    /// `REPLCONF listening-port`.
    pub port: u16,
    /// State.
    pub state: Mutex<SyncState>,
    /// Flows by id.
    pub flows: Mutex<Vec<Option<Arc<Flow>>>>,
    /// Set once the session is torn down.
    pub cancelled: AtomicBool,
    /// Main connection (for shutdown).
    pub main: Mutex<Option<TcpStream>>,
    /// STARTSTABLE received.
    pub go_stable: AtomicBool,
}

impl Session {
    /// Creates a session in PREPARATION.
    pub fn new(
        id: u64,
        replid: String,
        ip: String,
        port: u16,
        shards: usize,
        main: Option<TcpStream>,
    ) -> Session {
        Session {
            id,
            replid,
            ip,
            port,
            state: Mutex::new(SyncState::Preparation),
            flows: Mutex::new(vec![None; shards]),
            cancelled: AtomicBool::new(false),
            main: Mutex::new(main),
            go_stable: AtomicBool::new(false),
        }
    }

    /// Tears the session down: every socket shut, state CANCELLED.
    pub fn cancel(&self, m: &Master, why: &str) {
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        log::info!("replica session SYNC{} cancelled: {why}", self.id);
        *self.state.lock() = SyncState::Cancelled;
        for f in self.flows.lock().iter().flatten() {
            let _ = f.stream.shutdown(Shutdown::Both);
        }
        if let Some(s) = self.main.lock().as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
        m.sessions.lock().remove(&self.id);
        m.journal.wake();
    }

    /// All flows, when all are connected.
    pub fn all_flows(&self) -> Option<Vec<Arc<Flow>>> {
        self.flows.lock().iter().cloned().collect()
    }
}

/// A 40-character lowercase hex random string (master ids, eof tokens).
pub fn random_hex40() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut s = String::with_capacity(48);
    while s.len() < 40 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s.truncate(40);
    s
}

/// The `capa dragonfly` reply.
pub fn capa_reply(m: &Master, replid: &str, sync_id: u64) -> Value {
    let mut v = vec![
        Value::Simple(replid.as_bytes().to_vec()),
        Value::Simple(format!("SYNC{sync_id}").into_bytes()),
        Value::Int(m.cfg.shards as i64),
    ];
    match m.cfg.version {
        Ver::V1_40 => {
            v.push(Value::Int(5));
            v.push(Value::Simple(replid.as_bytes().to_vec()));
        }
        Ver::V1_34 => v.push(Value::Int(4)),
    }
    Value::Array(Some(v))
}

fn parse_sync_id(m: &Master, s: &[u8]) -> Result<Arc<Session>, Value> {
    let id = s
        .strip_prefix(b"SYNC")
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u64>().ok())
        .ok_or_else(|| Value::err("bad sync id"))?;
    m.sessions
        .lock()
        .get(&id)
        .cloned()
        .ok_or_else(|| Value::err("syncid not found"))
}

/// `DFLY FLOW <replid> <SYNC<k>> <flow> [lsn]`: registers the flow and returns it with its
/// reply, or an error reply.
pub fn dfly_flow(
    m: &Master,
    args: &[Vec<u8>],
    stream: &TcpStream,
) -> Result<(Arc<Session>, Arc<Flow>, Value), Value> {
    if args.len() < 5 || args.len() > 7 {
        return Err(Value::err("wrong number of arguments for 'dfly' command"));
    }
    let replid = m.replid.lock().clone();
    if args[2] != replid.as_bytes() {
        return Err(Value::err("bad master id"));
    }
    let sess = parse_sync_id(m, &args[3])?;
    let fid = std::str::from_utf8(&args[4])
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|f| *f < m.cfg.shards)
        .ok_or_else(|| Value::err("value is not an integer or out of range"))?;
    let lsn = match args.len() {
        6 => Some(
            std::str::from_utf8(&args[5])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Value::err("value is not an integer or out of range"))?,
        ),
        _ => None, // form (c) (previous master): we never were a replica, so FULL.
    };
    if *sess.state.lock() != SyncState::Preparation {
        return Err(Value::err("invalid state"));
    }
    m.journal.start();
    let partial = lsn.is_some_and(|l| m.journal.lsn_in_backlog(fid, l));
    if let Some(l) = lsn {
        if !partial {
            log::info!("flow {fid}: partial sync requested from stale LSN={l}, answering FULL");
        }
    }
    let token = random_hex40();
    let flow = Arc::new(Flow {
        id: fid,
        partial,
        start_lsn: lsn.unwrap_or(0),
        token: token.clone(),
        stream: stream
            .try_clone()
            .map_err(|e| Value::err(&format!("socket: {e}")))?,
        acked: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
        entries_sent: AtomicU64::new(0),
        fullsync_done: AtomicBool::new(false),
        stable_started: AtomicBool::new(false),
    });
    {
        let mut flows = sess.flows.lock();
        if let Some(slot) = flows.get_mut(fid) {
            *slot = Some(flow.clone());
        }
    }
    let _ = flow.stream.set_write_timeout(Some(m.cfg.repl_timeout));
    let kind = if partial { "PARTIAL" } else { "FULL" };
    let reply = Value::Array(Some(vec![
        Value::Simple(kind.as_bytes().to_vec()),
        Value::Simple(token.into_bytes()),
    ]));
    Ok((sess, flow, reply))
}

/// Reads `REPLCONF ACK` from a flow connection until it closes, then cancels the session.
pub fn flow_reader(
    m: &Master,
    sess: &Arc<Session>,
    flow: &Arc<Flow>,
    mut stream: TcpStream,
    mut rbuf: ReadBuf,
) {
    loop {
        match rbuf.read_request(&mut stream) {
            Ok(Some(args)) => {
                let is_ack = args.len() == 3
                    && args[0].eq_ignore_ascii_case(b"REPLCONF")
                    && args[1].eq_ignore_ascii_case(b"ACK");
                if is_ack {
                    if let Some(n) = std::str::from_utf8(&args[2])
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        flow.acked.store(n, Ordering::Relaxed);
                    }
                } else {
                    log::warn!(
                        "flow {}: ignoring a command other than REPLCONF ACK",
                        flow.id
                    );
                }
            }
            Ok(None) => {
                sess.cancel(m, &format!("flow {} closed by the replica", flow.id));
                return;
            }
            Err(e) => {
                sess.cancel(m, &format!("flow {}: {e}", flow.id));
                return;
            }
        }
    }
}

/// `DFLY SYNC <SYNC<k>>` on the main connection.
pub fn dfly_sync(m: &Arc<Master>, sync_id: &[u8]) -> Value {
    let sess = match parse_sync_id(m, sync_id) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(flows) = sess.all_flows() else {
        return Value::err("invalid state");
    };
    if *sess.state.lock() != SyncState::Preparation {
        return Value::err("invalid state");
    }
    let any_partial = flows.iter().any(|f| f.partial);
    let all_partial = flows.iter().all(|f| f.partial);
    if any_partial && (m.cfg.version == Ver::V1_40 || !all_partial) {
        // v1.40 rejects SYNC after PARTIAL (13876f716); mixed answers are never valid.
        return Value::err("invalid state");
    }
    // Point-in-time snapshot: read the keyspace and the journal position under the write lock.
    let (per_shard, lsns) = if all_partial {
        (
            vec![Vec::new(); m.cfg.shards],
            flows.iter().map(|f| f.start_lsn).collect::<Vec<_>>(),
        )
    } else {
        let _w = m.write_lock.lock();
        let data = match m.read_keyspace() {
            Ok(d) => d,
            Err(e) => return Value::err(&format!("snapshot failed: {e}")),
        };
        let lsns = (0..m.cfg.shards)
            .map(|s| m.journal.next_lsn(s))
            .collect::<Vec<_>>();
        (data, lsns)
    };
    *sess.state.lock() = SyncState::FullSync;
    let used_mem = m.backend_used_memory();
    let mut per_shard = per_shard;
    // Benchmark source mode: serialize every flow's whole snapshot before any flow sends a
    // byte (and before answering), so the replica's timing starts on equal terms for all flows.
    let mut jobs = Vec::with_capacity(flows.len());
    for f in flows {
        let keys = std::mem::take(&mut per_shard[f.id]);
        let pre = if m.cfg.bench_source {
            let mut w = m.snap_writer();
            w.header(&aux_fields(m, f.id, used_mem));
            write_keys(&mut w, &keys);
            w.fullsync_end();
            Some(w.take())
        } else {
            None
        };
        jobs.push((f, keys, pre));
    }
    for (f, keys, pre) in jobs {
        let lsn = lsns[f.id];
        let (m2, s2) = (m.clone(), sess.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("flow-{}", f.id))
            .spawn(move || full_writer(&m2, &s2, &f, keys, lsn, used_mem, pre));
        if let Err(e) = spawned {
            sess.cancel(m, &format!("cannot spawn a flow writer: {e}"));
            return Value::err("cannot start the full sync");
        }
    }
    Value::ok()
}

/// `DFLY STARTSTABLE <SYNC<k>>` on the main connection.
pub fn dfly_startstable(m: &Arc<Master>, sync_id: &[u8]) -> Value {
    let sess = match parse_sync_id(m, sync_id) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(flows) = sess.all_flows() else {
        return Value::err("invalid state");
    };
    let state = *sess.state.lock();
    match state {
        SyncState::FullSync => {}
        SyncState::Preparation
            if m.cfg.version == Ver::V1_40 && flows.iter().all(|f| f.partial) =>
        {
            *sess.state.lock() = SyncState::StableSync;
            for f in flows {
                let (m2, s2) = (m.clone(), sess.clone());
                let lsn = f.start_lsn;
                let spawned = std::thread::Builder::new()
                    .name(format!("flow-{}", f.id))
                    .spawn(move || {
                        f.stable_started.store(true, Ordering::SeqCst);
                        let r = stable_loop(&m2, &s2, &f, lsn, &mut Vec::new());
                        if let Err(e) = r {
                            s2.cancel(&m2, &format!("flow {}: {e}", f.id));
                        }
                    });
                if spawned.is_err() {
                    sess.cancel(m, "cannot spawn a flow writer");
                    return Value::err("invalid state");
                }
            }
            return Value::ok();
        }
        _ => return Value::err("invalid state"),
    }
    sess.go_stable.store(true, Ordering::SeqCst);
    m.journal.wake();
    // Like Dragonfly, answer once every flow has its trailer written (bounded wait).
    let deadline = Instant::now() + m.cfg.repl_timeout;
    while Instant::now() < deadline && !sess.cancelled.load(Ordering::SeqCst) {
        if flows
            .iter()
            .all(|f| f.stable_started.load(Ordering::SeqCst))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if sess.cancelled.load(Ordering::SeqCst) {
        return Value::err("invalid state");
    }
    *sess.state.lock() = SyncState::StableSync;
    Value::ok()
}

/// The AUX fields of flow `id`, in the recorded order.
pub fn aux_fields(m: &Master, id: usize, used_mem: u64) -> Vec<(&'static str, Vec<u8>)> {
    let ctime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut v = vec![
        ("redis-ver", b"6.2.11".to_vec()),
        ("df-ver", m.cfg.version.df_ver().as_bytes().to_vec()),
        ("redis-bits", b"64".to_vec()),
        ("ctime", ctime.to_string().into_bytes()),
        ("used-mem", used_mem.to_string().into_bytes()),
        ("aof-preamble", b"0".to_vec()),
    ];
    if id == 0 {
        v.push(("shard-count", m.cfg.shards.to_string().into_bytes()));
        v.push(("table-mem", (used_mem / 8).to_string().into_bytes()));
    }
    v.push(("shard-id", id.to_string().into_bytes()));
    v
}

fn write_keys(w: &mut SnapWriter, keys: &[KeyEntry]) {
    let mut cur_db = None;
    for k in keys {
        if cur_db.is_some() && cur_db != Some(k.db) {
            w.end_db();
        }
        cur_db = Some(k.db);
        w.entry(k.db, &k.key, k.expire_ms, &k.val);
    }
    w.end_db();
}

/// Writes bytes to a flow, applying the close-after-bytes fault and counting.
fn send(m: &Master, sess: &Session, flow: &Flow, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if sess.cancelled.load(Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "session cancelled",
        ));
    }
    m.wait_while_stalled(flow.id, &sess.cancelled);
    let sent = flow.bytes_sent.load(Ordering::Relaxed);
    if let Some(limit) = m.faults.lock().close_after_bytes(flow.id) {
        if sent + data.len() as u64 >= limit {
            let n = limit.saturating_sub(sent) as usize;
            let _ = (&flow.stream).write_all(&data[..n.min(data.len())]);
            flow.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            let _ = flow.stream.shutdown(Shutdown::Both);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("fault: closed after {limit} bytes"),
            ));
        }
    }
    (&flow.stream).write_all(data).map_err(|e| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "replication timeout: the replica stopped reading",
            )
        } else {
            e
        }
    })?;
    flow.bytes_sent
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    Ok(())
}

fn count_entry(m: &Master, flow: &Flow) -> io::Result<()> {
    let n = flow.entries_sent.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(limit) = m.faults.lock().close_after_entries(flow.id) {
        if n > limit {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("fault: closed after {limit} entries"),
            ));
        }
    }
    Ok(())
}

/// Appends journal entries from `cursor` whose keys already went out as blobs; returns
/// the new cursor. Stops at the first entry that must wait.
fn drain_blobs(
    m: &Master,
    flow: &Flow,
    w: &mut SnapWriter,
    cursor: u64,
    pending: &HashSet<(u32, Vec<u8>)>,
    wait: Duration,
) -> io::Result<u64> {
    let mut cursor = cursor;
    loop {
        match m.journal.read_from(flow.id, cursor, 1024, wait) {
            Read::Evicted => {
                return Err(io::Error::other(format!(
                    "journal entry {cursor} was dropped from the backlog"
                )));
            }
            Read::Entries(v) => {
                if v.is_empty() {
                    return Ok(cursor);
                }
                for e in &v {
                    if e.keys.iter().any(|k| pending.contains(&(e.db, k.clone()))) {
                        return Ok(cursor);
                    }
                    if let Err(err) = count_entry(m, flow) {
                        let _ = flow.stream.shutdown(Shutdown::Both);
                        return Err(err);
                    }
                    w.journal_blob(&e.bytes);
                    cursor = e.lsn + 1;
                }
                if v.len() < 1024 {
                    return Ok(cursor);
                }
            }
        }
    }
}

fn full_writer(
    m: &Arc<Master>,
    sess: &Arc<Session>,
    flow: &Arc<Flow>,
    keys: Vec<KeyEntry>,
    lsn: u64,
    used_mem: u64,
    pre: Option<Vec<u8>>,
) {
    let r = full_writer_inner(m, sess, flow, keys, lsn, used_mem, pre);
    if let Err(e) = r {
        sess.cancel(m, &format!("flow {}: {e}", flow.id));
    }
}

fn full_writer_inner(
    m: &Arc<Master>,
    sess: &Arc<Session>,
    flow: &Arc<Flow>,
    keys: Vec<KeyEntry>,
    lsn: u64,
    used_mem: u64,
    pre: Option<Vec<u8>>,
) -> io::Result<()> {
    let mut w = m.snap_writer();
    let mut cursor = lsn;
    let started = Instant::now();
    if let Some(bytes) = pre {
        // Benchmark source: everything was serialized before DFLY SYNC; measure pure serving.
        for piece in bytes.chunks(1 << 20) {
            send(m, sess, flow, piece)?;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let mb = bytes.len() as f64 / 1e6;
        log::info!(
            "flow {}: served {mb:.1} MB of snapshot in {secs:.3} s = {:.1} MB/s",
            flow.id,
            mb / secs
        );
        m.record_serving(bytes.len() as u64, started.elapsed());
    } else {
        w.header(&aux_fields(m, flow.id, used_mem));
        send(m, sess, flow, &w.take())?;
        let mut pending: HashSet<(u32, Vec<u8>)> =
            keys.iter().map(|k| (k.db, k.key.clone())).collect();
        let mut cur_db = None;
        for k in &keys {
            if cur_db.is_some() && cur_db != Some(k.db) {
                w.end_db();
            }
            cur_db = Some(k.db);
            w.entry(k.db, &k.key, k.expire_ms, &k.val);
            pending.remove(&(k.db, k.key.clone()));
            cursor = drain_blobs(m, flow, &mut w, cursor, &pending, Duration::ZERO)?;
            if w.out.len() >= 64 * 1024 {
                send(m, sess, flow, &w.take())?;
            }
        }
        w.end_db();
        pending.clear();
        cursor = drain_blobs(m, flow, &mut w, cursor, &pending, Duration::ZERO)?;
        w.fullsync_end();
        send(m, sess, flow, &w.take())?;
    }
    flow.fullsync_done.store(true, Ordering::SeqCst);
    let empty = HashSet::new();
    // Journal blobs until STARTSTABLE.
    while !sess.go_stable.load(Ordering::SeqCst) {
        if sess.cancelled.load(Ordering::SeqCst) {
            return Ok(());
        }
        cursor = drain_blobs(m, flow, &mut w, cursor, &empty, Duration::from_millis(20))?;
        w.flush(true);
        send(m, sess, flow, &w.take())?;
    }
    cursor = drain_blobs(m, flow, &mut w, cursor, &empty, Duration::ZERO)?;
    w.finish(cursor, flow.token.as_bytes());
    send(m, sess, flow, &w.take())?;
    flow.stable_started.store(true, Ordering::SeqCst);
    stable_loop(m, sess, flow, cursor, &mut Vec::new())
}

/// Streams the raw journal from `cursor` on, forever, with LSN markers every 3 s.
fn stable_loop(
    m: &Master,
    sess: &Session,
    flow: &Flow,
    mut cursor: u64,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut last_marker: Option<Instant> = None;
    loop {
        if sess.cancelled.load(Ordering::SeqCst) {
            return Ok(());
        }
        match m
            .journal
            .read_from(flow.id, cursor, 1024, Duration::from_millis(100))
        {
            Read::Evicted => {
                return Err(io::Error::other(format!(
                    "partial sync was unsuccessful because entry #{cursor} was dropped from the buffer"
                )));
            }
            Read::Entries(v) => {
                for e in &v {
                    if let Err(err) = count_entry(m, flow) {
                        let _ = send(m, sess, flow, out);
                        let _ = flow.stream.shutdown(Shutdown::Both);
                        return Err(err);
                    }
                    out.extend_from_slice(&e.bytes);
                    if last_marker.map_or(true, |t| t.elapsed() > Duration::from_secs(3)) {
                        out.push(journal::OP_LSN);
                        put_pu(out, e.lsn);
                        last_marker = Some(Instant::now());
                    }
                    cursor = e.lsn + 1;
                }
                send(m, sess, flow, out)?;
                out.clear();
            }
        }
    }
}
