//! One target node's writer: takes owned [`Batch`]es from a bounded channel and pipelines them
//! as RESP over one non-blocking connection driven by mio, reading replies while it writes,
//! with at most `window` batches sent but not fully answered.
//!
//! How a batch goes on the wire:
//! * [`BatchKind::Plain`] (snapshot pieces, journal blobs of a full sync): the commands, with
//!   a `SELECT` whenever the db changes (runs of plain `SET`s as one `MSET`, below). Nothing
//!   to acknowledge but the count.
//! * [`BatchKind::Journal`] (live journal entries of one flow): `MULTI`, the commands (with
//!   their `SELECT`s), `SELECT 0`, `SET <marker_prefix><flow> <replid>:<next>`, `EXEC`. The
//!   target commits the flow's position atomically with its writes: the base of exactly-once
//!   (docs/exactly-once.md). When `EXEC`'s reply arrives the flow's applied LSN becomes `next`.
//!   Consecutive plain `SET key value`s of one db inside the transaction go as one `MSET` (the
//!   same effect, in the same order: both replace any type and drop any TTL), which costs Redis
//!   about half the CPU per key of separate `SET`s; a target whose ACL or command table refuses
//!   `MSET` (asked once at connect, in a discarded `MULTI`) gets the `SET`s as they are. Plain
//!   batches coalesce the same way (a full sync of strings without TTL is nothing else).
//! * [`BatchKind::Global`] (FLUSHALL/FLUSHDB behind the cross-flow barrier): like a journal
//!   batch, but setting the marker of every flow.
//! * [`BatchKind::Tracked`] (Redis Cluster): the node's part of a flow batch, as [`Group`]s of
//!   one slot each: plain commands, or `MULTI`, the commands, the slot's marker `ZADD`, `EXEC`
//!   (`target::cluster`). A group the node redirects (`MOVED`, `ASK`) or asks to retry
//!   (`TRYAGAIN`, `CLUSTERDOWN`, `LOADING`) is resent synchronously, in reply order, on a side
//!   connection to the node named (with `ASKING` for `ASK`), before any later reply is handled:
//!   the per-key order holds through redirects (a transaction refused at `EXEC` applied nothing).
//!   Acknowledged parts report to the flow's [`Ticket`].
//!
//! Error replies are sorted by [`NextAction`]: a refused command (`WRONGTYPE`, …) is counted and
//! logged with its key escaped, and replication goes on (Dragonfly's replica does the same);
//! anything that retrying or an operator must fix (`OOM`, `NOAUTH`, `LOADING`, a refused
//! `MULTI` transaction, a lost connection) stops the writer with an error naming the node and
//! the command, and the pipeline decides (resume from the markers, or exit).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use mio::{Events, Interest, Poll, Token};
use rustls::{ClientConnection, StreamOwned};

use crate::model::{escape_bytes, Cmd, DbIndex, FlowId, Lsn};
use crate::net::{Conn, Endpoint, Stream};
use crate::ops::WriterStats;
use crate::resp::{self, ErrorKind, NextAction, ServerError, Value};

use super::cluster::{fix_addr, Ticket, TopologyHint};

/// What a batch is, for acknowledgement.
#[derive(Debug, Clone)]
pub enum BatchKind {
    /// Snapshot pieces or journal blobs of a full sync: no LSN.
    Plain,
    /// Live journal entries of the batch's flow; after them the flow's next LSN is `next`.
    Journal {
        /// The flow's `next` once every command of the batch is applied.
        next: Lsn,
    },
    /// Consecutive journal batches (of one flow or several) that were waiting in the writer's
    /// channel together, committed by the writer as one transaction with every flow's marker
    /// (built by the writer only; flows never send it).
    Merged {
        /// Each flow's `next` once the transaction is applied (its last batch's).
        nexts: Vec<(FlowId, Lsn)>,
        /// Where each original batch starts in `cmds`, and its flow (for messages).
        starts: Vec<(usize, FlowId)>,
    },
    /// One global command (FLUSHALL/FLUSHDB) applied once for every flow.
    Global {
        /// Each flow's `next` once the command is applied.
        nexts: Vec<(FlowId, Lsn)>,
    },
    /// A cluster node's part of a flow batch: `groups` cover `cmds` in order; acknowledgement
    /// goes to `ticket` (the flow's position moves once every node acknowledged its part).
    Tracked {
        /// Consecutive command ranges of one slot each.
        groups: Vec<Group>,
        /// Reported once every group is acknowledged.
        ticket: Ticket,
    },
}

/// Commands `..end` (from the previous group's end) of a [`BatchKind::Tracked`] batch, all in
/// one slot.
#[derive(Debug, Clone)]
pub struct Group {
    /// The slot (for messages).
    pub slot: u16,
    /// End (exclusive) of the group's commands in the batch.
    pub end: usize,
    /// `Some`: run the commands and this marker command in one `MULTI`/`EXEC`; `None`: plain.
    pub marker: Option<Cmd>,
}

/// Owned commands of one flow, in source order, with the db each applies to (target db).
#[derive(Debug, Clone)]
pub struct Batch {
    /// The flow they come from.
    pub flow: FlowId,
    /// The commands.
    pub cmds: Vec<(DbIndex, Cmd)>,
    /// How to acknowledge it.
    pub kind: BatchKind,
}

impl Batch {
    /// The flow command `i` comes from (a merged batch holds several flows' commands).
    pub fn flow_of(&self, i: usize) -> FlowId {
        match &self.kind {
            BatchKind::Merged { starts, .. } => starts
                .iter()
                .take_while(|(start, _)| *start <= i)
                .last()
                .map_or(self.flow, |(_, f)| *f),
            _ => self.flow,
        }
    }

    /// RESP bytes of the commands (without framing added by the writer).
    pub fn resp_bytes(&self) -> usize {
        self.cmds.iter().map(|(_, c)| c.resp_len()).sum()
    }
}

/// Counters shared by every writer and read by the coordinator.
#[derive(Debug)]
pub struct Applied {
    /// Per flow: the next LSN whose predecessors the target acknowledged (0 = none yet).
    pub next: Vec<AtomicU64>,
    /// Commands acknowledged by the target.
    pub commands: AtomicU64,
    /// Commands the target refused and that were skipped.
    pub refused: AtomicU64,
    /// Batches acknowledged.
    pub batches: AtomicU64,
}

impl Applied {
    /// Counters for `flows` flows, each starting at `start[i]`.
    pub fn new(start: &[Lsn]) -> Applied {
        Applied {
            next: start.iter().map(|l| AtomicU64::new(l.0)).collect(),
            commands: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }

    /// The applied `next` of a flow.
    pub fn get(&self, flow: FlowId) -> Lsn {
        Lsn(self
            .next
            .get(flow.0 as usize)
            .map_or(0, |a| a.load(Ordering::Acquire)))
    }

    /// Moves a flow's applied position forward (never back).
    pub fn advance(&self, flow: FlowId, next: Lsn) {
        if let Some(a) = self.next.get(flow.0 as usize) {
            a.fetch_max(next.0, Ordering::AcqRel);
        }
    }
}

/// Marker key and value format (docs/exactly-once.md).
#[derive(Debug, Clone)]
pub struct Markers {
    /// Key prefix (config `checkpoint.marker_prefix`).
    pub prefix: String,
    /// The master's replication id, stored in the value so a marker of another master is
    /// never mistaken for a position.
    pub replid: String,
}

impl Markers {
    /// `<prefix><flow>`.
    pub fn key(&self, flow: FlowId) -> Vec<u8> {
        let mut k = self.prefix.as_bytes().to_vec();
        k.extend_from_slice(itoa::Buffer::new().format(flow.0).as_bytes());
        k
    }

    /// `SET <prefix><flow> <replid>:<next>`.
    pub fn set_cmd(&self, flow: FlowId, next: Lsn) -> Cmd {
        let mut v = self.replid.as_bytes().to_vec();
        v.push(b':');
        v.extend_from_slice(itoa::Buffer::new().format(next.0).as_bytes());
        let mut c = Cmd::new("SET");
        c.arg(&self.key(flow)).arg(&v);
        c
    }

    /// Parses a marker value; `Some(next)` only when it belongs to `replid`.
    pub fn parse(&self, value: &[u8]) -> Option<Lsn> {
        let s = std::str::from_utf8(value).ok()?;
        let (id, n) = s.rsplit_once(':')?;
        (id == self.replid).then_some(())?;
        n.parse().ok().map(Lsn)
    }

    /// `<prefix>owner`: set at every full sync, never removed by the tool; says the target
    /// holds data df2redis-sync wrote.
    pub fn owner_key(&self) -> Vec<u8> {
        let mut k = self.prefix.as_bytes().to_vec();
        k.extend_from_slice(b"owner");
        k
    }

    /// `SET <prefix>owner <replid>`.
    pub fn owner_cmd(&self) -> Cmd {
        let mut c = Cmd::new("SET");
        c.arg(&self.owner_key()).arg(self.replid.as_bytes());
        c
    }

    /// True when the target (db 0) holds our owner marker or any flow marker (of any master).
    pub fn ours(&self, conn: &mut Conn, flows: u32) -> Result<bool, crate::net::Error> {
        conn.request_ok(&Cmd::from_args(["SELECT", "0"]))?;
        let mut c = Cmd::new("EXISTS");
        c.arg(&self.owner_key());
        for i in 0..flows {
            c.arg(&self.key(FlowId(i)));
        }
        Ok(conn.request_ok(&c)?.as_int().is_some_and(|n| n > 0))
    }

    /// The `CLIENT SETNAME` of writer connections: `df2redis-sync-writer:<prefix>` (two runs
    /// with the same marker prefix on one target would share markers anyway).
    pub fn client_name(&self) -> Vec<u8> {
        let mut n = b"df2redis-sync-writer:".to_vec();
        n.extend_from_slice(self.prefix.as_bytes());
        n
    }

    /// Closes writer connections of an earlier session or process still open on this node
    /// (`CLIENT KILL ID`). Redis may not have read all that a dead writer sent (it reads a
    /// pipelining client 16 KiB per event-loop turn): a transaction still in its input could
    /// otherwise run after this session read the markers, and be applied twice. A killed
    /// client's unread input is dropped, and what already ran is in the markers. Returns how
    /// many were closed; an error when the target refuses `CLIENT` (ACL).
    pub fn retire_writers(&self, conn: &mut Conn) -> Result<usize, crate::net::Error> {
        let list = conn.request_ok(&Cmd::from_args(["CLIENT", "LIST", "TYPE", "normal"]))?;
        let text = list
            .as_bytes()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let want = format!("name={}", String::from_utf8_lossy(&self.client_name()));
        let mut closed = 0;
        for line in text.lines() {
            if !line.split(' ').any(|f| f == want) {
                continue;
            }
            let Some(id) = line.split(' ').find_map(|f| f.strip_prefix("id=")) else {
                continue;
            };
            let mut kill = Cmd::new("CLIENT");
            kill.arg(b"KILL").arg(b"ID").arg(id.as_bytes());
            // Already gone (it ended by itself meanwhile) answers 0 or an error: both fine.
            if conn.request(&kill).is_ok() {
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Reads every flow's marker from the target (db 0): the exact applied position.
    pub fn read(&self, conn: &mut Conn, flows: u32) -> Result<Vec<Option<Lsn>>, crate::net::Error> {
        conn.request_ok(&Cmd::from_args(["SELECT", "0"]))?;
        (0..flows)
            .map(|i| {
                let mut c = Cmd::new("GET");
                c.arg(&self.key(FlowId(i)));
                let v = conn.request_ok(&c)?;
                Ok(v.as_bytes().and_then(|b| self.parse(b)))
            })
            .collect()
    }
}

/// Why a writer stopped.
#[derive(Debug)]
pub struct WriterError {
    /// The node.
    pub addr: String,
    /// What happened.
    pub detail: String,
    /// Retrying later (reconnect, resume from the markers) can help.
    pub retryable: bool,
}

impl fmt::Display for WriterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "target {}: {}", self.addr, self.detail)
    }
}

impl std::error::Error for WriterError {}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The node.
    pub endpoint: Endpoint,
    /// Batches sent but not fully answered, at most.
    pub window: usize,
    /// Marker format.
    pub markers: Markers,
    /// No reply for this long while replies are due = the node is gone.
    pub reply_timeout: Duration,
    /// Cluster targets: where a writer reports that the slot map is out of date.
    pub hint: Option<Arc<TopologyHint>>,
}

/// What one reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A `SELECT` the writer added.
    Select,
    /// Command `i` of the batch, executed directly.
    Cmd(usize),
    /// Plain `SET`s `i..i + n` of the batch, executed directly as one `MSET`.
    Mset(usize, usize),
    /// `MULTI`.
    Multi,
    /// A command queued inside `MULTI` (`+QUEUED`).
    Queued,
    /// `EXEC`: its array answers the front transaction's `queued` in order.
    Exec,
}

/// One `MULTI`…`EXEC` of an in-flight batch.
struct Tx {
    queued: Vec<Queued>,
    /// The [`Group`] it runs (tracked batches).
    group: Option<usize>,
    /// The first error a command got while being queued (`EXEC` then says `EXECABORT`).
    queue_error: Option<ServerError>,
}

/// What an element of the `EXEC` array answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Select,
    Cmd(usize),
    /// One `MSET` made of the plain `SET`s `i..i + n` of the batch.
    Mset(usize, usize),
    Marker,
}

/// Most `SET`s one `MSET` takes (a merged transaction holds at most [`MERGE_MAX_CMDS`]
/// commands anyway).
const MSET_MAX: usize = 1024;

/// Encodes command `i` of `cmds` into `out` — or, when `coalesce` is on and a run of at least
/// two plain `SET`s of one db starts there, that run (at most [`MSET_MAX`]) as one `MSET` —
/// and returns how many commands it took (0 past the end).
fn encode_at(cmds: &[(DbIndex, Cmd)], i: usize, coalesce: bool, out: &mut Vec<u8>) -> usize {
    let Some(rest) = cmds.get(i..).filter(|r| !r.is_empty()) else {
        return 0;
    };
    let db = rest[0].0;
    let run = if coalesce {
        rest.iter()
            .take(MSET_MAX)
            .take_while(|(d, c)| *d == db && c.is_plain_set())
            .count()
    } else {
        0
    };
    if run < 2 {
        rest[0].1.encode_resp(out);
        return 1;
    }
    let mut ibuf = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(ibuf.format(1 + 2 * run).as_bytes());
    out.extend_from_slice(b"\r\n$4\r\nMSET\r\n");
    for (_, c) in &rest[..run] {
        c.encode_args_from(1, out);
    }
    run
}

/// Whether the target runs `MSET` for this connection's user: queued inside a `MULTI` that is
/// then discarded, so nothing is written whatever the answer (a refused command is refused
/// when queued: ACL, unknown or renamed command). One request at a time: should `MULTI` itself
/// fail, the `MSET` is never sent; should `DISCARD` be refused, `EXEC` ends the transaction.
fn mset_allowed(conn: &mut Conn, markers: &Markers) -> bool {
    if conn.request_ok(&Cmd::new("MULTI")).is_err() {
        return false;
    }
    let mut probe = Cmd::new("MSET");
    let mut key = markers.prefix.as_bytes().to_vec();
    key.extend_from_slice(b"mset-probe");
    probe.arg(&key).arg(b"1");
    let queued = conn.request(&probe);
    let mut discarded = conn.request_ok(&Cmd::new("DISCARD"));
    if matches!(&discarded, Err(e) if e.server_error().is_some()) {
        // DISCARD refused (an ACL without it): leave the transaction with EXEC instead. Redis
        // aborts it (a command refused while queued marks the transaction), so nothing is
        // written; were it run, it would write the probe key under the marker prefix (ours;
        // `check` skips that prefix).
        discarded = conn.request(&Cmd::new("EXEC"));
    }
    match (queued, discarded) {
        (Ok(v), Ok(_)) => match v.server_error() {
            None => true,
            Some(e) => {
                log::info!(
                    "target {}: MSET refused ({}): consecutive SETs go one by one",
                    conn.addr(),
                    e.message
                );
                false
            }
        },
        _ => false,
    }
}

struct Inflight {
    batch: Batch,
    slots: VecDeque<Slot>,
    txs: VecDeque<Tx>,
}

/// The transport under mio.
enum MioStream {
    Plain(mio::net::TcpStream),
    Tls(Box<StreamOwned<ClientConnection, mio::net::TcpStream>>),
}

impl MioStream {
    fn from_stream(s: Stream) -> io::Result<MioStream> {
        Ok(match s {
            Stream::Plain(t) => {
                t.set_nonblocking(true)?;
                MioStream::Plain(mio::net::TcpStream::from_std(t))
            }
            Stream::Tls(b) => {
                let StreamOwned { conn, sock } = *b;
                sock.set_nonblocking(true)?;
                MioStream::Tls(Box::new(StreamOwned::new(
                    conn,
                    mio::net::TcpStream::from_std(sock),
                )))
            }
        })
    }

    fn source(&mut self) -> &mut mio::net::TcpStream {
        match self {
            MioStream::Plain(s) => s,
            MioStream::Tls(s) => &mut s.sock,
        }
    }
}

impl Read for MioStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            MioStream::Plain(s) => s.read(buf),
            MioStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for MioStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MioStream::Plain(s) => s.write(buf),
            MioStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            MioStream::Plain(s) => s.flush(),
            MioStream::Tls(s) => s.flush(),
        }
    }
}

/// A connected writer.
pub struct Writer {
    cfg: WriterConfig,
    stream: MioStream,
    poll: Poll,
    events: Events,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    /// Scratch for socket reads, allocated (and zeroed) once: a fresh 64 KiB array per read
    /// cost a memset per loop turn.
    rchunk: Vec<u8>,
    inflight: VecDeque<Inflight>,
    db: Option<DbIndex>,
    applied: Arc<Applied>,
    limits: resp::Limits,
    /// Live counters for the status model (ops, errors, in-flight, channel fill).
    stats: Arc<WriterStats>,
    /// Blocking connections to other nodes, for redirected commands.
    side: std::collections::HashMap<String, Conn>,
    /// A batch taken from the channel while merging that could not join the merged one; it
    /// is the next to encode (channel order is kept).
    stash: Option<Batch>,
    /// The last batch taken was live journal (stable sync): see [`Writer::group_wait`].
    journal_mode: bool,
    /// When the last journal transaction was encoded (see [`Writer::linger_left`]).
    last_journal_tx: Option<Instant>,
    /// Consecutive plain `SET`s of a journal transaction go as one `MSET` (standalone targets
    /// that accept `MSET`; see the module doc).
    coalesce_sets: bool,
}

/// Shortest interval between two journal transactions of a writer on a busy stream (see
/// [`Writer::linger_left`]): bounds the wait a batch can get from it, and keeps the
/// transaction rate (one `MULTI`, `EXEC` and marker each, plus a round of syscalls on both
/// sides) at about 1000/s whatever the entry rate. (`epoll` waits in whole milliseconds.)
const JOURNAL_LINGER: Duration = Duration::from_millis(1);

/// Largest merged journal transaction: commands, and bytes of argument payload. Each batch
/// is already capped by the flow (`pipeline.batch_commands`, `batch_bytes`); this bounds how
/// long one merged `EXEC` keeps the target busy.
const MERGE_MAX_CMDS: usize = 1024;
const MERGE_MAX_BYTES: usize = 1 << 20;

const TOKEN: Token = Token(0);

impl Writer {
    /// Connects (blocking, with `AUTH`), then switches the socket to non-blocking under mio.
    pub fn connect(cfg: WriterConfig, applied: Arc<Applied>) -> Result<Writer, WriterError> {
        let addr = cfg.endpoint.addr.clone();
        let conn = Conn::connect(&cfg.endpoint).map_err(|e| WriterError {
            addr: addr.clone(),
            detail: format!("connect: {e}"),
            retryable: !e.is_auth(),
        })?;
        let io_err = |what: &str, e: io::Error| WriterError {
            addr: addr.clone(),
            detail: format!("{what}: {e}"),
            retryable: true,
        };
        // Named, so the next session can find this connection if it outlives us
        // ([`Markers::retire_writers`]); a target that refuses CLIENT is still written to.
        let mut conn = conn;
        let mut name = Cmd::new("CLIENT");
        name.arg(b"SETNAME").arg(&cfg.markers.client_name());
        if let Err(e) = conn.request_ok(&name) {
            log::debug!("{addr}: CLIENT SETNAME refused: {e}");
        }
        let coalesce_sets = cfg.hint.is_none() && mset_allowed(&mut conn, &cfg.markers);
        let (stream, rest) = conn.into_parts();
        let mut stream = MioStream::from_stream(stream).map_err(|e| io_err("non-blocking", e))?;
        let poll = Poll::new().map_err(|e| io_err("mio poll", e))?;
        poll.registry()
            .register(
                stream.source(),
                TOKEN,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| io_err("mio register", e))?;
        Ok(Writer {
            cfg,
            stream,
            poll,
            events: Events::with_capacity(16),
            wbuf: Vec::new(),
            wpos: 0,
            rbuf: rest,
            rchunk: vec![0; 64 << 10],
            inflight: VecDeque::new(),
            db: None,
            applied,
            limits: resp::Limits::default(),
            stats: Arc::new(WriterStats::new(&addr)),
            side: std::collections::HashMap::new(),
            stash: None,
            journal_mode: false,
            last_journal_tx: None,
            coalesce_sets,
        })
    }

    /// Publishes this writer's counters in `stats` (shared with the status model).
    pub fn with_stats(mut self, stats: Arc<WriterStats>) -> Writer {
        self.stats = stats;
        self
    }

    fn err(&self, detail: impl Into<String>, retryable: bool) -> WriterError {
        WriterError {
            addr: self.cfg.endpoint.addr.clone(),
            detail: detail.into(),
            retryable,
        }
    }

    /// Runs until `rx` is disconnected and every batch is answered, or until `abort` is set
    /// (the session failed elsewhere: batches not yet answered are dropped; nothing of them
    /// counts as applied, so the positions stay exact).
    pub fn run(mut self, rx: &Receiver<Batch>, abort: &AtomicBool) -> Result<(), WriterError> {
        let mut open = true;
        let mut last_progress = Instant::now();
        loop {
            self.stats
                .inflight
                .store(self.inflight.len() as u64, Ordering::Relaxed);
            self.stats.queued.store(rx.len() as u64, Ordering::Relaxed);
            if abort.load(Ordering::SeqCst) {
                return Err(self.err(
                    format!(
                        "session aborted with {} batch(es) unanswered",
                        self.inflight.len()
                    ),
                    true,
                ));
            }
            // Take batches while the window allows.
            while open && self.inflight.len() < self.cfg.window.max(1) && !self.group_wait(rx) {
                let got = if let Some(b) = self.stash.take() {
                    Some(b)
                } else if self.inflight.is_empty() && self.wpos >= self.wbuf.len() {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(b) => Some(b),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                } else {
                    match rx.try_recv() {
                        Ok(b) => Some(b),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                };
                match got {
                    Some(b) => {
                        if self.inflight.is_empty() {
                            last_progress = Instant::now();
                        }
                        #[cfg(debug_assertions)]
                        if matches!(b.kind, BatchKind::Journal { .. }) && !b.cmds.is_empty() {
                            crate::pipeline::failpoint::panic_if("writer-panic", None);
                        }
                        let b = self.merge(b, rx);
                        if self.journal_mode {
                            self.last_journal_tx = Some(Instant::now());
                        }
                        self.encode(b);
                        // A batch that expects no reply is acknowledged at once.
                        self.finish_front()?;
                    }
                    None => break,
                }
            }
            if !open && self.inflight.is_empty() && self.wpos >= self.wbuf.len() {
                if let Some(b) = self.stash.take() {
                    // Taken while merging, before the channel was seen closed.
                    self.encode(b);
                    self.finish_front()?;
                    continue;
                }
                return Ok(());
            }
            if self.inflight.is_empty() {
                if let Some(left) = self.linger_left() {
                    // Holding journal batches with nothing in flight: nothing to poll for.
                    std::thread::sleep(left);
                }
                continue;
            }
            self.write_some()?;
            if self.read_some()? {
                last_progress = Instant::now();
            }
            if self.inflight.is_empty() {
                continue;
            }
            if last_progress.elapsed() > self.cfg.reply_timeout {
                return Err(self.err(
                    format!(
                        "no reply for {:?} with {} batch(es) waiting",
                        self.cfg.reply_timeout,
                        self.inflight.len()
                    ),
                    true,
                ));
            }
            // Wait for the socket (replies, or room to write); short when more batches wait.
            let t = if self.inflight.len() < self.cfg.window
                && !rx.is_empty()
                && !self.group_wait(rx)
            {
                Duration::ZERO
            } else if let Some(left) = self.linger_left() {
                left.min(Duration::from_millis(50))
            } else {
                Duration::from_millis(50)
            };
            match self.poll.poll(&mut self.events, Some(t)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(format!("mio poll: {e}"), true)),
            }
        }
    }

    /// Whether the writer leaves the batches queued in its channel for now, so that they
    /// merge into one transaction: in stable sync, while fewer than a merge's worth of
    /// batches wait (half the channel, at most 2) and either a transaction is still
    /// unanswered or the last one went less than [`JOURNAL_LINGER`] ago. So a batch waits at
    /// most about one transaction's run time or 1 ms, and a batch after a quiet millisecond
    /// with nothing in flight goes at once (low rates keep their low lag). A full sync (plain
    /// batches) and cluster writers (tracked batches) are never held.
    fn group_wait(&self, rx: &Receiver<Batch>) -> bool {
        if !self.journal_mode || self.stash.is_some() {
            return false;
        }
        let ready = rx.capacity().map_or(2, |c| (c / 2).clamp(1, 2));
        rx.len() < ready && (!self.inflight.is_empty() || self.linger_left().is_some())
    }

    /// Time left before the next journal transaction may go when the last one went less than
    /// [`JOURNAL_LINGER`] ago (a busy stream); `None` when it may go now. On a busy stream
    /// this caps a writer at about one journal transaction per millisecond, which collects
    /// what arrives meanwhile into it; after a quiet millisecond a batch goes at once.
    fn linger_left(&self) -> Option<Duration> {
        let e = self.last_journal_tx?.elapsed();
        JOURNAL_LINGER.checked_sub(e).filter(|d| !d.is_zero())
    }

    /// Group commit: a journal batch taken from the channel absorbs the journal batches queued
    /// right behind it (any flow), up to [`MERGE_MAX_CMDS`] / [`MERGE_MAX_BYTES`], so one
    /// `MULTI`…`EXEC` commits all of them with every flow's marker. Batches queue only while
    /// the writer or the target is behind, so this adds no wait: an idle writer sends each
    /// batch as it comes, a busy one sends fewer, larger transactions (less CPU per entry
    /// on both sides). Exactly-once is unchanged: the markers are still in the transaction
    /// that holds their flow's writes, and a flow's position moves only when that `EXEC` is
    /// answered. Channel order is kept; the first batch that cannot join (another kind, or
    /// over the caps) is kept in `stash` and encoded next.
    fn merge(&mut self, first: Batch, rx: &Receiver<Batch>) -> Batch {
        self.journal_mode = matches!(first.kind, BatchKind::Journal { .. });
        let BatchKind::Journal { next } = first.kind else {
            return first;
        };
        let flow = first.flow;
        let mut cmds = first.cmds;
        let mut bytes: usize = cmds.iter().map(|(_, c)| c.payload_len()).sum();
        let mut nexts = vec![(flow, next)];
        let mut starts = vec![(0, flow)];
        while cmds.len() < MERGE_MAX_CMDS && bytes < MERGE_MAX_BYTES {
            let Ok(b) = rx.try_recv() else { break };
            let (BatchKind::Journal { next: n }, more) = (&b.kind, b.cmds.len()) else {
                self.stash = Some(b);
                break;
            };
            let n = *n;
            let add: usize = b.cmds.iter().map(|(_, c)| c.payload_len()).sum();
            if cmds.len() + more > MERGE_MAX_CMDS || bytes + add > MERGE_MAX_BYTES {
                self.stash = Some(b);
                break;
            }
            starts.push((cmds.len(), b.flow));
            bytes += add;
            cmds.extend(b.cmds);
            match nexts.iter_mut().find(|(f, _)| *f == b.flow) {
                Some(e) => e.1 = e.1.max(n),
                None => nexts.push((b.flow, n)),
            }
        }
        let kind = if starts.len() == 1 {
            BatchKind::Journal { next }
        } else {
            BatchKind::Merged { nexts, starts }
        };
        Batch { flow, cmds, kind }
    }

    fn select(
        &mut self,
        db: DbIndex,
        slots: &mut VecDeque<Slot>,
        queued: Option<&mut Vec<Queued>>,
    ) {
        if self.db == Some(db) {
            return;
        }
        let mut c = Cmd::new("SELECT");
        c.arg_int(db.0);
        c.encode_resp(&mut self.wbuf);
        match queued {
            Some(q) => {
                slots.push_back(Slot::Queued);
                q.push(Queued::Select);
            }
            None => slots.push_back(Slot::Select),
        }
        self.db = Some(db);
    }

    fn encode(&mut self, batch: Batch) {
        if self.wpos > 0 && self.wpos >= self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        let mut slots = VecDeque::new();
        let mut txs = VecDeque::new();
        match &batch.kind {
            BatchKind::Plain => {
                let mut i = 0;
                while let Some((db, _)) = batch.cmds.get(i) {
                    self.select(*db, &mut slots, None);
                    let n = encode_at(&batch.cmds, i, self.coalesce_sets, &mut self.wbuf);
                    slots.push_back(if n > 1 {
                        Slot::Mset(i, n)
                    } else {
                        Slot::Cmd(i)
                    });
                    i += n;
                }
            }
            BatchKind::Tracked { groups, .. } => {
                let mut start = 0;
                for (g, group) in groups.iter().enumerate() {
                    let end = group.end.min(batch.cmds.len());
                    let range = start..end.max(start);
                    start = end.max(start);
                    match &group.marker {
                        None => {
                            for i in range {
                                if let Some((db, cmd)) = batch.cmds.get(i) {
                                    self.select(*db, &mut slots, None);
                                    cmd.encode_resp(&mut self.wbuf);
                                    slots.push_back(Slot::Cmd(i));
                                }
                            }
                        }
                        Some(marker) => {
                            let mut queued = Vec::new();
                            Cmd::new("MULTI").encode_resp(&mut self.wbuf);
                            slots.push_back(Slot::Multi);
                            for i in range {
                                if let Some((db, cmd)) = batch.cmds.get(i) {
                                    self.select(*db, &mut slots, Some(&mut queued));
                                    cmd.encode_resp(&mut self.wbuf);
                                    slots.push_back(Slot::Queued);
                                    queued.push(Queued::Cmd(i));
                                }
                            }
                            marker.encode_resp(&mut self.wbuf);
                            slots.push_back(Slot::Queued);
                            queued.push(Queued::Marker);
                            Cmd::new("EXEC").encode_resp(&mut self.wbuf);
                            slots.push_back(Slot::Exec);
                            txs.push_back(Tx {
                                queued,
                                group: Some(g),
                                queue_error: None,
                            });
                        }
                    }
                }
            }
            BatchKind::Journal { .. } | BatchKind::Global { .. } | BatchKind::Merged { .. } => {
                let mut queued = Vec::new();
                Cmd::new("MULTI").encode_resp(&mut self.wbuf);
                slots.push_back(Slot::Multi);
                let mut i = 0;
                while let Some((db, _)) = batch.cmds.get(i) {
                    self.select(*db, &mut slots, Some(&mut queued));
                    let n = encode_at(&batch.cmds, i, self.coalesce_sets, &mut self.wbuf);
                    slots.push_back(Slot::Queued);
                    queued.push(if n > 1 {
                        Queued::Mset(i, n)
                    } else {
                        Queued::Cmd(i)
                    });
                    i += n;
                }
                self.select(DbIndex(0), &mut slots, Some(&mut queued));
                let one;
                let marks: &[(FlowId, Lsn)] = match &batch.kind {
                    BatchKind::Journal { next } => {
                        one = [(batch.flow, *next)];
                        &one
                    }
                    BatchKind::Global { nexts } | BatchKind::Merged { nexts, .. } => nexts,
                    _ => &[],
                };
                for &(f, n) in marks {
                    self.cfg.markers.set_cmd(f, n).encode_resp(&mut self.wbuf);
                    slots.push_back(Slot::Queued);
                    queued.push(Queued::Marker);
                }
                Cmd::new("EXEC").encode_resp(&mut self.wbuf);
                slots.push_back(Slot::Exec);
                txs.push_back(Tx {
                    queued,
                    group: None,
                    queue_error: None,
                });
            }
        }
        self.inflight.push_back(Inflight { batch, slots, txs });
    }

    fn write_some(&mut self) -> Result<(), WriterError> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(self.err("connection closed while writing", true)),
                Ok(n) => {
                    self.wpos += n;
                    self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(format!("write: {e}"), true)),
            }
        }
        match self.stream.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(self.err(format!("write: {e}"), true)),
        }
        if self.wpos >= self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        Ok(())
    }

    /// Reads and handles replies; true if any arrived.
    fn read_some(&mut self) -> Result<bool, WriterError> {
        let mut any = false;
        loop {
            match self.stream.read(&mut self.rchunk) {
                Ok(0) => return Err(self.err("the server closed the connection", true)),
                Ok(n) => self
                    .rbuf
                    .extend_from_slice(self.rchunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(format!("read: {e}"), true)),
            }
        }
        let mut pos = 0;
        let result = loop {
            let rest = self.rbuf.get(pos..).unwrap_or_default();
            // Nearly every reply is `+OK`, `+QUEUED` or an integer answering a command that
            // needs nothing but counting: skip it without building a `Value` (one allocation
            // per reply otherwise). Errors, bulk strings, arrays and `EXEC` go the full way.
            let front_slot = self.inflight.front().and_then(|f| f.slots.front()).copied();
            // Likewise an `EXEC` answered by an array of nothing but such replies (every
            // command of the transaction succeeded): nothing to report but the batch's
            // acknowledgement. Building it as a `Value` cost one allocation per command.
            if front_slot == Some(Slot::Exec) {
                if let Some(n) = plain_array_len(rest) {
                    pos += n;
                    any = true;
                    if let Some(f) = self.inflight.front_mut() {
                        f.slots.pop_front();
                        f.txs.pop_front();
                    }
                    if let Err(e) = self.finish_front() {
                        break Err(e);
                    }
                    continue;
                }
            }
            if let Some(n) = plain_reply_len(rest) {
                let countable = front_slot.is_some_and(|s| s != Slot::Exec);
                if countable {
                    pos += n;
                    any = true;
                    if let Some(f) = self.inflight.front_mut() {
                        f.slots.pop_front();
                    }
                    if let Err(e) = self.finish_front() {
                        break Err(e);
                    }
                    continue;
                }
            }
            match resp::decode(rest, &self.limits) {
                Ok(Some((v, n))) => {
                    pos += n;
                    any = true;
                    if let Err(e) = self.on_reply(v) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(any),
                Err(e) => break Err(self.err(format!("bad reply: {e}"), true)),
            }
        };
        self.rbuf.drain(..pos);
        result
    }

    fn on_reply(&mut self, v: Value) -> Result<(), WriterError> {
        let cluster = self.cfg.hint.is_some();
        // Every in-flight batch expects at least one more reply (`finish_front` pops a batch
        // once it has all of them), so a reply with no slot to fill is one the target sent
        // without being asked.
        let slot = self.inflight.front_mut().and_then(|f| f.slots.pop_front());
        let (Some(slot), Some(front)) = (slot, self.inflight.front_mut()) else {
            return Err(self.err(
                format!("unexpected reply {v:?}: more replies than commands sent"),
                true,
            ));
        };
        match slot {
            Slot::Select | Slot::Multi | Slot::Queued => {
                if let Some(e) = v.server_error() {
                    let what = match slot {
                        Slot::Select => "SELECT",
                        Slot::Multi => "MULTI",
                        _ => "a command inside MULTI",
                    };
                    // Queue-time errors make EXEC fail; report them there with the command.
                    if slot != Slot::Queued {
                        return Err(self.fatal(what, &e));
                    }
                    if let Some(tx) = front.txs.front_mut() {
                        if tx.queue_error.is_none() {
                            tx.queue_error = Some(e);
                        }
                    }
                }
            }
            Slot::Mset(i, n) => {
                // Only on standalone targets (never redirected); refused for all its SETs.
                if let Some(e) = v.server_error() {
                    for j in i..i + n {
                        self.refused(j, &e)?;
                    }
                }
            }
            Slot::Cmd(i) => {
                if let Some(e) = v.server_error() {
                    if cluster && e.is_transient() {
                        let cmd = front.batch.cmds.get(i).map(|(_, c)| c.clone());
                        if let Some(cmd) = cmd {
                            self.resend(&[(i, cmd)], None, e)?;
                        }
                    } else {
                        self.refused(i, &e)?;
                    }
                }
            }
            Slot::Exec => {
                let tx = front.txs.pop_front();
                let Some(items) = v.as_array() else {
                    let mut err = v.server_error();
                    // EXECABORT: the cause is the error a command got while being queued.
                    if let Some(q) = tx.as_ref().and_then(|t| t.queue_error.clone()) {
                        if err.as_ref().map_or(true, |e| e.code() == "EXECABORT") {
                            err = Some(q);
                        }
                    }
                    let group = match (&front.batch.kind, tx.as_ref().and_then(|t| t.group)) {
                        (BatchKind::Tracked { groups, .. }, Some(g)) => {
                            let start = if g == 0 {
                                0
                            } else {
                                groups.get(g - 1).map_or(0, |x| x.end)
                            };
                            groups.get(g).and_then(|x| {
                                let cmds: Vec<(usize, Cmd)> = (start..x.end)
                                    .filter_map(|i| {
                                        front.batch.cmds.get(i).map(|(_, c)| (i, c.clone()))
                                    })
                                    .collect();
                                x.marker.clone().map(|m| (cmds, m))
                            })
                        }
                        _ => None,
                    };
                    if let (Some(e), Some((cmds, marker))) = (&err, group) {
                        if cluster && e.is_transient() {
                            let e = e.clone();
                            self.resend(&cmds, Some(marker), e)?;
                            return self.finish_front();
                        }
                    }
                    let detail = match err {
                        Some(e) => e.message,
                        None => format!("{v:?}"),
                    };
                    let front = self.inflight.front();
                    let cmds: Vec<String> = front
                        .map(|f| {
                            f.batch
                                .cmds
                                .iter()
                                .map(|(_, c)| format!("{c:?}"))
                                .take(3)
                                .collect()
                        })
                        .unwrap_or_default();
                    return Err(self.err(
                        format!(
                            "transaction refused ({detail}); first commands: {}",
                            cmds.join(", ")
                        ),
                        false,
                    ));
                };
                let queued = tx.map(|t| t.queued).unwrap_or_default();
                let items = items.to_vec();
                for (q, item) in queued.iter().zip(items.iter()) {
                    if let Some(e) = item.server_error() {
                        match q {
                            Queued::Cmd(i) => self.refused(*i, &e)?,
                            // Every SET of it was refused with it (nothing but the `MSET`
                            // itself can be, and then for all of them): each is counted
                            // and named, as it would have been alone.
                            Queued::Mset(i, n) => {
                                for j in *i..i + n {
                                    self.refused(j, &e)?;
                                }
                            }
                            Queued::Select => return Err(self.fatal("SELECT", &e)),
                            Queued::Marker => return Err(self.fatal("marker SET", &e)),
                        }
                    }
                }
            }
        }
        self.finish_front()
    }

    /// Pops the front batches that have every reply they expect, and acknowledges them.
    fn finish_front(&mut self) -> Result<(), WriterError> {
        while self.inflight.front().is_some_and(|f| f.slots.is_empty()) {
            if let Some(f) = self.inflight.pop_front() {
                self.applied
                    .commands
                    .fetch_add(f.batch.cmds.len() as u64, Ordering::Relaxed);
                self.applied.batches.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .ops
                    .fetch_add(f.batch.cmds.len() as u64, Ordering::Relaxed);
                match &f.batch.kind {
                    BatchKind::Plain => {}
                    BatchKind::Journal { next } => self.applied.advance(f.batch.flow, *next),
                    BatchKind::Global { nexts } | BatchKind::Merged { nexts, .. } => {
                        for (fl, n) in nexts {
                            self.applied.advance(*fl, *n);
                        }
                    }
                    BatchKind::Tracked { ticket, .. } => ticket.done(),
                }
            }
        }
        Ok(())
    }

    /// A blocking connection to another node (kept for later redirects).
    fn side_conn(&mut self, addr: &str) -> Result<&mut Conn, WriterError> {
        if !self.side.contains_key(addr) {
            let mut c =
                Conn::connect(&self.cfg.endpoint.with_addr(addr)).map_err(|e| WriterError {
                    addr: addr.to_string(),
                    detail: format!("connect (redirect): {e}"),
                    retryable: !e.is_auth(),
                })?;
            // Named like the writer itself, so a later session retires it too.
            let mut name = Cmd::new("CLIENT");
            name.arg(b"SETNAME").arg(&self.cfg.markers.client_name());
            let _ = c.request(&name);
            self.side.insert(addr.to_string(), c);
        }
        let home = self.cfg.endpoint.addr.clone();
        self.side.get_mut(addr).ok_or(WriterError {
            addr: home,
            detail: "side connection lost".into(),
            retryable: true,
        })
    }

    /// Resends commands `cmds` (indexes into the front batch) that got `first` (a redirect or
    /// a retry-later error), synchronously, until a node applies them: as one transaction with
    /// `marker` when given, else one plain command at a time. Nothing after them is handled
    /// before they are applied, which keeps the per-key order.
    fn resend(
        &mut self,
        cmds: &[(usize, Cmd)],
        marker: Option<Cmd>,
        first: ServerError,
    ) -> Result<(), WriterError> {
        if marker.is_none() && cmds.len() > 1 {
            // Plain commands are independent: one at a time, in order.
            for c in cmds {
                self.resend(std::slice::from_ref(c), None, first.clone())?;
            }
            return Ok(());
        }
        let home = self.cfg.endpoint.addr.clone();
        let mut addr = home.clone();
        let mut err = first;
        let mut asking = false;
        let mut backoff = Duration::from_millis(10);
        let deadline = Instant::now() + self.cfg.reply_timeout.max(Duration::from_secs(30));
        let mut hops = 0u32;
        loop {
            hops += 1;
            match &err.kind {
                ErrorKind::Moved { addr: a, .. } => {
                    self.stats.redirects.fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = &self.cfg.hint {
                        h.mark();
                    }
                    let to = fix_addr(a, &addr);
                    if hops > 1 && to == addr && !asking {
                        // The node that owns the slot redirects to itself: the commands touch
                        // a slot other than the one they were routed by.
                        return Err(self.err(
                            format!(
                                "{addr} redirects to itself ({}): the commands are not in one \
                                 slot; first: {:?}",
                                err.message,
                                cmds.first().map(|(_, c)| c)
                            ),
                            false,
                        ));
                    }
                    addr = to;
                    asking = false;
                }
                ErrorKind::Ask { addr: a, .. } => {
                    self.stats.redirects.fetch_add(1, Ordering::Relaxed);
                    addr = fix_addr(a, &addr);
                    asking = true;
                }
                ErrorKind::TryAgain
                | ErrorKind::ClusterDown
                | ErrorKind::Loading
                | ErrorKind::Busy
                | ErrorKind::ReadOnly => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    if err.kind == ErrorKind::ReadOnly {
                        if let Some(h) = &self.cfg.hint {
                            h.mark();
                        }
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    addr = home.clone();
                    asking = false;
                }
                _ => {
                    return Err(self.err(
                        format!("redirected command refused: {}", err.message),
                        false,
                    ))
                }
            }
            if Instant::now() > deadline {
                return Err(self.err(
                    format!(
                        "still redirected after {hops} tries ({}); last: {}",
                        escape_bytes(cmds.first().map_or(&b""[..], |(_, c)| c.name())),
                        err.message
                    ),
                    true,
                ));
            }
            log::debug!(
                "target {home}: {} -> resending to {addr}{}",
                err.message,
                if asking { " with ASKING" } else { "" }
            );
            let mut wire: Vec<Cmd> = Vec::new();
            if asking {
                wire.push(Cmd::new("ASKING"));
            }
            if let Some(m) = &marker {
                wire.push(Cmd::new("MULTI"));
                wire.extend(cmds.iter().map(|(_, c)| c.clone()));
                wire.push(m.clone());
                wire.push(Cmd::new("EXEC"));
            } else {
                wire.extend(cmds.iter().map(|(_, c)| c.clone()));
            }
            let replies = {
                let conn = self.side_conn(&addr)?;
                let r = conn.send_all(wire.iter()).and_then(|()| {
                    (0..wire.len())
                        .map(|_| conn.read_reply())
                        .collect::<Result<Vec<Value>, _>>()
                });
                match r {
                    Ok(v) => v,
                    Err(e) => {
                        self.side.remove(&addr);
                        return Err(WriterError {
                            addr: addr.clone(),
                            detail: format!("redirect: {e}"),
                            retryable: true,
                        });
                    }
                }
            };
            let mut replies = replies.into_iter();
            if asking {
                if let Some(e) = replies.next().and_then(|v| v.server_error()) {
                    return Err(self.err(format!("ASKING refused by {addr}: {e}"), true));
                }
            }
            if marker.is_none() {
                let Some(v) = replies.next() else {
                    return Err(self.err("redirect: reply missing", true));
                };
                match v.server_error() {
                    None => return Ok(()),
                    Some(e) if e.is_transient() => err = e,
                    Some(e) => {
                        let i = cmds.first().map_or(0, |(i, _)| *i);
                        return self.refused(i, &e);
                    }
                }
                continue;
            }
            // MULTI, queued…, EXEC.
            let _multi = replies.next();
            let mut queue_error = None;
            for _ in 0..=cmds.len() {
                if let Some(e) = replies.next().and_then(|v| v.server_error()) {
                    queue_error.get_or_insert(e);
                }
            }
            let Some(exec) = replies.next() else {
                return Err(self.err("redirect: EXEC reply missing", true));
            };
            if let Some(items) = exec.as_array() {
                for ((i, _), item) in cmds.iter().zip(items.iter()) {
                    if let Some(e) = item.server_error() {
                        self.refused(*i, &e)?;
                    }
                }
                if let Some(e) = items.get(cmds.len()).and_then(Value::server_error) {
                    return Err(self.fatal("marker ZADD", &e));
                }
                return Ok(());
            }
            let e = match (exec.server_error(), queue_error) {
                (Some(e), Some(q)) if e.code() == "EXECABORT" => q,
                (Some(e), _) => e,
                (None, _) => {
                    return Err(self.err(format!("redirect: unexpected EXEC reply {exec:?}"), true))
                }
            };
            if !e.is_transient() {
                return Err(self.err(
                    format!("transaction refused on {addr} ({})", e.message),
                    false,
                ));
            }
            err = e;
        }
    }

    fn fatal(&self, what: &str, e: &ServerError) -> WriterError {
        let retryable = matches!(e.next_action(), NextAction::RetryLater);
        self.err(format!("{what} refused: {}", e.message), retryable)
    }

    /// A command the target refused: skipped and counted when retrying cannot help and
    /// nothing else is wrong; otherwise the writer stops.
    fn refused(&self, i: usize, e: &ServerError) -> Result<(), WriterError> {
        let front = self.inflight.front();
        let cmd = front.and_then(|f| f.batch.cmds.get(i));
        let (flow, name, key) = match (front, cmd) {
            (Some(f), Some((_, c))) => (
                f.batch.flow_of(i),
                escape_bytes(c.name()),
                c.get(1).map(escape_bytes).unwrap_or_default(),
            ),
            _ => (FlowId(0), String::new(), String::new()),
        };
        match e.next_action() {
            NextAction::CommandFailed => {
                self.applied.refused.fetch_add(1, Ordering::Relaxed);
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "target {}: {flow}: {name} {key} refused, skipped: {}",
                    self.cfg.endpoint.addr,
                    e.message
                );
                Ok(())
            }
            action => Err(self.err(
                format!("{flow}: {name} {key} refused ({action:?}): {}", e.message),
                matches!(action, NextAction::RetryLater),
            )),
        }
    }
}

/// Length of a complete simple-string or integer reply at the start of `buf` (`+OK\r\n`,
/// `:3\r\n`), if it is one and short; anything else (errors, bulk, arrays, a partial line, a
/// suspiciously long line) is left to the full decoder and its limits.
fn plain_reply_len(buf: &[u8]) -> Option<usize> {
    let first = *buf.first()?;
    if first != b'+' && first != b':' {
        return None;
    }
    let head = buf.get(..buf.len().min(64))?;
    let nl = memchr::memchr(b'\n', head)?;
    (nl >= 2 && head.get(nl - 1) == Some(&b'\r')).then_some(nl + 1)
}

/// Length of a complete array reply at the start of `buf` whose every element is a plain
/// reply ([`plain_reply_len`]): an `EXEC` in which every command succeeded. `None` for
/// anything else (an error element, a bulk string, a null or nested array, a partial reply),
/// which goes to the full decoder.
fn plain_array_len(buf: &[u8]) -> Option<usize> {
    if *buf.first()? != b'*' {
        return None;
    }
    let head = buf.get(..buf.len().min(24))?;
    let nl = memchr::memchr(b'\n', head)?;
    let digits = head.get(1..nl.checked_sub(1)?)?;
    if head.get(nl - 1) != Some(&b'\r') || digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let mut n = 0usize;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(d - b'0');
    }
    let mut pos = nl + 1;
    for _ in 0..n {
        pos += plain_reply_len(buf.get(pos..)?)?;
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_arrays_are_recognised_and_everything_else_is_left_to_the_decoder() {
        assert_eq!(plain_array_len(b"*2\r\n+OK\r\n:1\r\n+OK"), Some(13));
        assert_eq!(plain_array_len(b"*0\r\n"), Some(4));
        assert_eq!(plain_array_len(b"*2\r\n+OK\r\n"), None, "incomplete");
        assert_eq!(
            plain_array_len(b"*2\r\n+OK\r\n-ERR x\r\n"),
            None,
            "error inside"
        );
        assert_eq!(plain_array_len(b"*1\r\n$1\r\na\r\n"), None, "bulk inside");
        assert_eq!(plain_array_len(b"*1\r\n*0\r\n"), None, "nested");
        assert_eq!(plain_array_len(b"*-1\r\n"), None, "null array");
        assert_eq!(plain_array_len(b"-EXECABORT x\r\n"), None);
        assert_eq!(plain_array_len(b"*\r\n"), None);
        assert_eq!(plain_array_len(b"*1x\r\n+OK\r\n"), None);
        assert_eq!(plain_array_len(b"*9999999999\r\n"), None, "count too long");
        assert_eq!(plain_array_len(b"*3"), None);
        // The decoder agrees on every array the fast path takes.
        let v = b"*3\r\n+OK\r\n+QUEUED\r\n:-5\r\n";
        let (val, used) = resp::decode(v, &resp::Limits::default()).unwrap().unwrap();
        assert_eq!(plain_array_len(v), Some(used));
        assert_eq!(val.as_array().map(|a| a.len()), Some(3));
    }

    #[test]
    fn plain_replies_are_recognised_and_everything_else_is_left_to_the_decoder() {
        assert_eq!(plain_reply_len(b"+OK\r\n+OK\r\n"), Some(5));
        assert_eq!(plain_reply_len(b"+QUEUED\r\n"), Some(9));
        assert_eq!(plain_reply_len(b":12\r\n"), Some(5));
        assert_eq!(plain_reply_len(b"+OK\r"), None, "incomplete");
        assert_eq!(plain_reply_len(b"+OK\n"), None, "no CR");
        assert_eq!(plain_reply_len(b"-ERR x\r\n"), None);
        assert_eq!(plain_reply_len(b"$2\r\nab\r\n"), None);
        assert_eq!(plain_reply_len(b"*1\r\n:1\r\n"), None);
        assert_eq!(plain_reply_len(b""), None);
        let long = [b"+".as_slice(), &[b'a'; 100], b"\r\n"].concat();
        assert_eq!(plain_reply_len(&long), None, "long lines go to the decoder");
    }

    #[test]
    fn marker_round_trip() {
        let m = Markers {
            prefix: "p:".into(),
            replid: "abc".into(),
        };
        let c = m.set_cmd(FlowId(3), Lsn(42));
        assert_eq!(c.get(1), Some(&b"p:3"[..]));
        assert_eq!(m.parse(c.get(2).unwrap()), Some(Lsn(42)));
        assert_eq!(m.parse(b"other:42"), None);
        assert_eq!(m.parse(b"abc:x"), None);
    }
}
