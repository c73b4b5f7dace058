//! A test master that serves one recorded Dragonfly session (`../shared/testdata/*/capture*`)
//! to a replica, exactly as the testdata README describes: the handshake is answered with the
//! recorded master's values (the `capa dragonfly` reply and each flow's `DFLY FLOW` reply are
//! sent verbatim), after `DFLY SYNC` each flow gets the master bytes that followed its FLOW
//! reply up to the moment the recorded replica sent `DFLY STARTSTABLE` (from the events
//! files), after `DFLY STARTSTABLE` the rest; `REPLCONF ACK` is never answered, only recorded.
//! Every connection stays open after the recorded bytes, so the replica sits in stable sync.
//!
//! `INFO SERVER` (which the recorded replica never sent) is answered with the release from
//! `master-info.txt` (or the folder name). Anything a correct replica must not do (a wrong
//! replid or sync id, `DFLY SYNC` after PARTIAL on v1.35+, `STARTSTABLE` with a FULL flow and
//! no `SYNC`, a resume LSN other than the recorded one, a command other than `REPLCONF ACK` on
//! a flow) is answered with an error and listed in [`ReplayMaster::violations`].

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use df2redis_sync::resp::{self, Value};

/// One recorded flow.
#[derive(Debug, Clone)]
pub struct RecordedFlow {
    /// Flow id (from the recorded `DFLY FLOW`).
    pub id: u32,
    /// The FLOW reply bytes, verbatim.
    pub reply: Vec<u8>,
    /// True when the recorded master answered PARTIAL.
    pub partial: bool,
    /// The LSN the recorded replica asked for, if it resumed.
    pub requested_lsn: Option<u64>,
    /// Master bytes after the FLOW reply.
    pub data: Vec<u8>,
    /// How many of `data` the master sent before the replica's `DFLY STARTSTABLE`.
    pub split: usize,
    /// Every `REPLCONF ACK` value the recorded replica sent on this flow.
    pub acks: Vec<u64>,
}

/// One capture folder, parsed.
#[derive(Debug, Clone)]
pub struct RecordedSession {
    /// The folder.
    pub dir: PathBuf,
    /// `dragonfly_version` of the master (`df-v1.40.1`).
    pub version: String,
    /// The `capa dragonfly` reply, verbatim.
    pub capa_reply: Vec<u8>,
    /// Master replication id (element 0 of the capa reply).
    pub replid: String,
    /// Sync id (element 1).
    pub sync_id: String,
    /// Flows by id.
    pub flows: Vec<RecordedFlow>,
}

impl RecordedSession {
    /// The last ACK the recorded replica sent on each flow (= its final `next`).
    pub fn final_acks(&self) -> Vec<u64> {
        self.flows
            .iter()
            .map(|f| f.acks.last().copied().unwrap_or(0))
            .collect()
    }

    /// Loads a capture folder (`…/s1-lz4-2shards/capture`).
    pub fn load(dir: &Path) -> RecordedSession {
        let ctx = dir.display().to_string();
        let mut conns: Vec<u32> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"))
            .filter_map(|e| {
                let n = e.ok()?.file_name().to_string_lossy().into_owned();
                n.strip_prefix("conn-")?
                    .strip_suffix(".c2s.bin")?
                    .parse()
                    .ok()
            })
            .collect();
        conns.sort_unstable();
        let read = |c: u32, s: &str| {
            let p = dir.join(format!("conn-{c:03}.{s}"));
            fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let recording = dir.parent().unwrap_or(dir);
        let version = read_version(recording);

        // Main connection: pair its inline commands with the master's replies in order.
        let mut main = None;
        for &c in &conns {
            let c2s = read(c, "c2s.bin");
            if memchr::memmem::find(&c2s, b"REPLCONF capa dragonfly").is_some() {
                main = Some((c, c2s));
            }
        }
        let (main_conn, main_c2s) = main.unwrap_or_else(|| panic!("{ctx}: no main connection"));
        let main_s2c = read(main_conn, "s2c.bin");
        let lines: Vec<&[u8]> = main_c2s
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty())
            .collect();
        let mut pos = 0;
        let mut capa_reply = None;
        let mut startstable_off = None;
        let mut off = 0;
        for line in &main_c2s.split(|&b| b == b'\n').collect::<Vec<_>>() {
            if line.starts_with(b"DFLY STARTSTABLE") {
                startstable_off = Some(off);
            }
            off += line.len() + 1;
        }
        for line in &lines {
            let (_, n) = resp::decode(&main_s2c[pos..], &resp::Limits::default())
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("{ctx}: main replies end early"));
            if *line == b"REPLCONF capa dragonfly" {
                capa_reply = Some(main_s2c[pos..pos + n].to_vec());
            }
            pos += n;
        }
        let capa_reply = capa_reply.unwrap_or_else(|| panic!("{ctx}: no capa reply"));
        let (capa, _) = resp::decode(&capa_reply, &resp::Limits::default())
            .unwrap()
            .unwrap();
        let elems = capa
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: capa reply"));
        let replid = elems[0].as_str().unwrap().to_string();
        let sync_id = elems[1].as_str().unwrap().to_string();

        let startstable_off =
            startstable_off.unwrap_or_else(|| panic!("{ctx}: no DFLY STARTSTABLE"));
        let main_events = read_events(&dir.join(format!("conn-{main_conn:03}.events.jsonl")));
        let startstable_t = main_events
            .iter()
            .find(|e| e.c2s && e.off <= startstable_off && startstable_off < e.off + e.len)
            .map(|e| e.t)
            .unwrap_or_else(|| panic!("{ctx}: STARTSTABLE not in the events"));

        let mut flows = Vec::new();
        for &c in &conns {
            let c2s = read(c, "c2s.bin");
            let Some(rest) = c2s.strip_prefix(b"DFLY FLOW ") else {
                continue;
            };
            let mut lines = rest.split(|&b| b == b'\n');
            let first = String::from_utf8_lossy(lines.next().unwrap_or_default())
                .trim()
                .to_string();
            let words: Vec<&str> = first.split_whitespace().collect();
            let id: u32 = words[2].parse().unwrap();
            let requested_lsn = words.get(3).and_then(|w| w.parse().ok());
            let acks = lines
                .filter_map(|l| {
                    let l = std::str::from_utf8(l).ok()?.trim();
                    l.strip_prefix("REPLCONF ACK ")?.parse().ok()
                })
                .collect();
            let s2c = read(c, "s2c.bin");
            let (_, reply_len) = resp::decode(&s2c, &resp::Limits::default())
                .unwrap()
                .unwrap_or_else(|| panic!("{ctx}: conn {c}: no FLOW reply"));
            let partial = s2c.starts_with(b"*2\r\n+PARTIAL");
            let events = read_events(&dir.join(format!("conn-{c:03}.events.jsonl")));
            let sent_before = events
                .iter()
                .filter(|e| !e.c2s && e.t < startstable_t)
                .map(|e| e.off + e.len)
                .max()
                .unwrap_or(0);
            flows.push(RecordedFlow {
                id,
                reply: s2c[..reply_len].to_vec(),
                partial,
                requested_lsn,
                split: sent_before.saturating_sub(reply_len),
                data: s2c[reply_len..].to_vec(),
                acks,
            });
        }
        flows.sort_by_key(|f| f.id);
        RecordedSession {
            dir: dir.to_path_buf(),
            version,
            capa_reply,
            replid,
            sync_id,
            flows,
        }
    }
}

/// `dragonfly_version` from `master-info.txt`, else from the folder name (`dragonfly-v1.34.2`).
fn read_version(recording: &Path) -> String {
    if let Ok(t) = fs::read_to_string(recording.join("master-info.txt")) {
        for l in t.lines() {
            if let Some(v) = l.trim().strip_prefix("dragonfly_version:") {
                return v.to_string();
            }
        }
    }
    let parent = recording
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let v = parent.strip_prefix("dragonfly-").unwrap_or("v1.40.1");
    format!("df-{v}")
}

struct Event {
    t: f64,
    c2s: bool,
    off: usize,
    len: usize,
}

fn read_events(path: &Path) -> Vec<Event> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Event {
                t: v["t"].as_f64().unwrap(),
                c2s: v["dir"] == "c2s",
                off: v["off"].as_u64().unwrap() as usize,
                len: v["len"].as_u64().unwrap() as usize,
            }
        })
        .collect()
}

/// What the replay master observed (shared with its threads).
#[derive(Debug, Default)]
pub struct Observed {
    /// Protocol violations by the replica, in order.
    pub violations: Vec<String>,
    /// Every command received on the main connection (arguments joined by spaces).
    pub main_commands: Vec<String>,
    /// `REPLCONF ACK` values per flow id, in order.
    pub acks: BTreeMap<u32, Vec<u64>>,
    /// `DFLY FLOW` LSN arguments per flow id.
    pub flow_lsns: BTreeMap<u32, Option<u64>>,
    /// Connections accepted.
    pub connections: usize,
    /// Connections the replica closed (EOF or error).
    pub closed: usize,
}

/// Phase of the served session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Synced,
    Stable,
}

struct Shared {
    /// The sessions to serve, one per `REPLCONF capa dragonfly` (the last one is repeated).
    sessions: Vec<Arc<RecordedSession>>,
    current: std::sync::atomic::AtomicUsize,
    /// A `capa dragonfly` was answered with the current session.
    used: AtomicBool,
    obs: Mutex<Observed>,
    /// Per flow id: the socket once `DFLY FLOW` arrived (a clone used to push data).
    flows: Mutex<BTreeMap<u32, TcpStream>>,
    phase: Mutex<Phase>,
    stop: AtomicBool,
    /// Every accepted connection (clones), to end a session the way Dragonfly does.
    conns: Mutex<Vec<TcpStream>>,
    /// Per session, per flow id: how many `data` bytes were pushed (one lock per flow, held
    /// while pushing, so the pre-split part of a flow always goes before the rest).
    pushed: Vec<BTreeMap<u32, Arc<Mutex<usize>>>>,
}

impl Shared {
    /// Closes every connection: what Dragonfly does when any connection of a replication
    /// session closes (§5.3).
    fn end_session(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn cur(&self) -> Arc<RecordedSession> {
        self.sessions[self.current.load(Ordering::SeqCst)].clone()
    }

    fn pushed_of(&self, id: u32) -> Arc<Mutex<usize>> {
        self.pushed[self.current.load(Ordering::SeqCst)][&id].clone()
    }

    /// A new replication session begins: move to the next recorded session, if any.
    fn on_capa(&self) {
        let i = self.current.load(Ordering::SeqCst);
        if self.used.swap(true, Ordering::SeqCst) && i + 1 < self.sessions.len() {
            self.current.store(i + 1, Ordering::SeqCst);
            self.flows.lock().unwrap().clear();
            *self.phase.lock().unwrap() = Phase::Handshake;
        }
    }
}

/// A master serving one recorded session on a loopback port. Dropping it closes every
/// connection.
pub struct ReplayMaster {
    addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ReplayMaster {
    /// Serves the capture folder `dir`.
    pub fn start(dir: &Path) -> ReplayMaster {
        ReplayMaster::serve(RecordedSession::load(dir))
    }

    /// Serves an already loaded session.
    pub fn serve(session: RecordedSession) -> ReplayMaster {
        ReplayMaster::serve_sequence(vec![session])
    }

    /// Serves `sessions[0]` to the first replication session, `sessions[1]` to the next one
    /// (a reconnect), and so on.
    pub fn serve_sequence(sessions: Vec<RecordedSession>) -> ReplayMaster {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let pushed = sessions
            .iter()
            .map(|s| {
                s.flows
                    .iter()
                    .map(|f| (f.id, Arc::new(Mutex::new(0))))
                    .collect()
            })
            .collect();
        let shared = Arc::new(Shared {
            sessions: sessions.into_iter().map(Arc::new).collect(),
            current: std::sync::atomic::AtomicUsize::new(0),
            used: AtomicBool::new(false),
            obs: Mutex::new(Observed::default()),
            flows: Mutex::new(BTreeMap::new()),
            phase: Mutex::new(Phase::Handshake),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            pushed,
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("replay-accept".into())
            .spawn(move || {
                let mut handlers = Vec::new();
                while !sh.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            sh.conns.lock().unwrap().push(s.try_clone().unwrap());
                            sh.obs.lock().unwrap().connections += 1;
                            let sh2 = sh.clone();
                            handlers.push(
                                std::thread::Builder::new()
                                    .name("replay-conn".into())
                                    .spawn(move || serve_conn(sh2, s))
                                    .unwrap(),
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for h in handlers {
                    let _ = h.join();
                }
            })
            .unwrap();
        ReplayMaster {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The session being served.
    pub fn session(&self) -> Arc<RecordedSession> {
        self.shared.cur()
    }

    /// A copy of what was observed so far.
    pub fn observed(&self) -> Observed {
        let o = self.shared.obs.lock().unwrap();
        Observed {
            violations: o.violations.clone(),
            main_commands: o.main_commands.clone(),
            acks: o.acks.clone(),
            flow_lsns: o.flow_lsns.clone(),
            connections: o.connections,
            closed: o.closed,
        }
    }

    /// Protocol violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.shared.obs.lock().unwrap().violations.clone()
    }

    /// The last ACK received per flow id (None = none yet).
    pub fn last_acks(&self) -> Vec<Option<u64>> {
        let o = self.shared.obs.lock().unwrap();
        (0..self.shared.cur().flows.len() as u32)
            .map(|i| o.acks.get(&i).and_then(|v| v.last().copied()))
            .collect()
    }

    /// True once every recorded byte of every flow was pushed.
    pub fn all_sent(&self) -> bool {
        self.shared
            .cur()
            .flows
            .iter()
            .all(|f| *self.shared.pushed_of(f.id).lock().unwrap() == f.data.len())
    }

    /// Waits until the replica's last ACK on every flow reached `want` (per flow), or the
    /// deadline passes. Returns whether it did.
    pub fn wait_acks(&self, want: &[u64], timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let got = self.last_acks();
            if got.len() == want.len()
                && got
                    .iter()
                    .zip(want)
                    .all(|(g, w)| g.is_some_and(|g| g >= *w))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Closes every connection (the replica sees the master go away).
    pub fn close_all(&self) {
        self.shared.end_session();
    }
}

impl Drop for ReplayMaster {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.close_all();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn violation(sh: &Shared, msg: String) {
    sh.obs.lock().unwrap().violations.push(msg);
}

/// Reads one request (RESP array or inline line) from `buf`; returns its arguments and length.
fn parse_request(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    if buf.first() == Some(&b'*') {
        let (v, n) = resp::decode(buf, &resp::Limits::default()).ok()??;
        let args = v
            .as_array()?
            .iter()
            .map(|a| a.as_bytes().map(<[u8]>::to_vec).unwrap_or_default())
            .collect();
        return Some((args, n));
    }
    let end = memchr::memchr(b'\n', buf)?;
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let args = line
        .split(|&b| b == b' ')
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Some((args, end + 1))
}

/// Serves one connection until the replica closes it or the master stops.
fn serve_conn(sh: Arc<Shared>, mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut flow_id: Option<u32> = None;
    let mut last_ack: Option<u64> = None;
    // Only a connection of the replication session (main after `capa dragonfly`, or a flow)
    // ends the session when it closes, as on Dragonfly; a plain client (an INFO probe) does not.
    let mut in_session = false;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        }
        while let Some((args, n)) = parse_request(&buf) {
            buf.drain(..n);
            if args.is_empty() {
                continue;
            }
            let name = upper(&args[0]);
            in_session |= (name == "REPLCONF"
                && args.iter().any(|a| a.eq_ignore_ascii_case(b"dragonfly")))
                || (name == "DFLY" && args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(b"FLOW")));
            let reply = handle(&sh, &s, &mut flow_id, &mut last_ack, &args);
            if let Some(r) = reply {
                if s.write_all(&r).is_err() {
                    break;
                }
            }
        }
    }
    sh.obs.lock().unwrap().closed += 1;
    if in_session {
        sh.end_session();
    }
}

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

/// Handles one request; returns the reply bytes (None: no reply, as for `REPLCONF ACK`).
fn handle(
    sh: &Arc<Shared>,
    s: &TcpStream,
    flow_id: &mut Option<u32>,
    last_ack: &mut Option<u64>,
    args: &[Vec<u8>],
) -> Option<Vec<u8>> {
    let text: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let name = upper(&args[0]);
    let sub = args.get(1).map(|a| upper(a)).unwrap_or_default();
    if let Some(id) = *flow_id {
        if name == "REPLCONF" && sub == "ACK" && args.len() == 3 {
            if *sh.phase.lock().unwrap() != Phase::Stable {
                violation(
                    sh,
                    format!("flow {id}: REPLCONF ACK before DFLY STARTSTABLE"),
                );
            }
            match text[2].parse::<u64>() {
                Ok(v) => {
                    // Monotonic on one connection (a new session may restart lower).
                    if last_ack.is_some_and(|l| l > v) {
                        violation(sh, format!("flow {id}: ACK went back to {v}"));
                    }
                    *last_ack = Some(v);
                    sh.obs.lock().unwrap().acks.entry(id).or_default().push(v);
                }
                Err(_) => violation(sh, format!("flow {id}: bad ACK {:?}", text[2])),
            }
        } else {
            violation(
                sh,
                format!(
                    "flow {id}: command other than REPLCONF ACK: {}",
                    text.join(" ")
                ),
            );
        }
        return None;
    }
    sh.obs.lock().unwrap().main_commands.push(text.join(" "));
    let session = sh.cur();
    let ok = b"+OK\r\n".to_vec();
    match (name.as_str(), sub.as_str()) {
        ("PING", _) => Some(b"+PONG\r\n".to_vec()),
        ("AUTH", _) => Some(ok),
        ("INFO", "KEYSPACE") => Some(Value::Bulk(b"# Keyspace\r\n".to_vec()).to_resp()),
        ("INFO", _) => {
            let body = format!(
                "# Server\r\nredis_version:7.4.0\r\ndragonfly_version:{}\r\nredis_mode:standalone\r\n",
                session.version
            );
            Some(Value::Bulk(body.into_bytes()).to_resp())
        }
        ("REPLCONF", "CAPA") if args.len() == 3 && args[2] == b"dragonfly" => {
            sh.on_capa();
            Some(sh.cur().capa_reply.clone())
        }
        ("REPLCONF", "ACK") => {
            violation(sh, "REPLCONF ACK on the main connection".into());
            None
        }
        ("REPLCONF", _) => Some(ok),
        ("DFLY", "FLOW") => Some(flow(sh, s, flow_id, &text)),
        ("DFLY", "SYNC") => Some(sync(sh, &text)),
        ("DFLY", "STARTSTABLE") => Some(start_stable(sh, &text)),
        _ => {
            violation(sh, format!("unexpected command {}", text.join(" ")));
            Some(b"-ERR unknown command\r\n".to_vec())
        }
    }
}

fn flow(sh: &Arc<Shared>, s: &TcpStream, flow_id: &mut Option<u32>, text: &[String]) -> Vec<u8> {
    let session = sh.cur();
    if text.len() < 5 || text[2] != session.replid || text[3] != session.sync_id {
        violation(sh, format!("bad DFLY FLOW {}", text.join(" ")));
        return b"-ERR bad master id\r\n".to_vec();
    }
    let Some(rec) = text[4]
        .parse::<u32>()
        .ok()
        .and_then(|i| session.flows.iter().find(|f| f.id == i))
    else {
        violation(sh, format!("bad flow id in {}", text.join(" ")));
        return b"-ERR value is not an integer or out of range\r\n".to_vec();
    };
    let lsn = text.get(5).and_then(|l| l.parse::<u64>().ok());
    if rec.partial && lsn != rec.requested_lsn {
        violation(
            sh,
            format!(
                "flow {}: resumed with LSN {lsn:?}, the recording resumed with {:?}",
                rec.id, rec.requested_lsn
            ),
        );
    }
    *flow_id = Some(rec.id);
    sh.obs.lock().unwrap().flow_lsns.insert(rec.id, lsn);
    sh.flows
        .lock()
        .unwrap()
        .insert(rec.id, s.try_clone().unwrap());
    rec.reply.clone()
}

fn check_sync_id(sh: &Shared, text: &[String]) -> bool {
    if text.get(2) != Some(&sh.cur().sync_id) || text.len() != 3 {
        violation(sh, format!("bad sync id in {}", text.join(" ")));
        return false;
    }
    if sh.flows.lock().unwrap().len() != sh.cur().flows.len() {
        violation(
            sh,
            format!("{} before every flow connected", text.join(" ")),
        );
        return false;
    }
    true
}

fn release_at_least(version: &str, minor: u32) -> bool {
    let v = version.trim_start_matches("df-v");
    let mut it = v.split('.');
    let major: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let min: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    major > 1 || (major == 1 && min >= minor)
}

fn sync(sh: &Arc<Shared>, text: &[String]) -> Vec<u8> {
    if !check_sync_id(sh, text) {
        return b"-ERR invalid state\r\n".to_vec();
    }
    let any_partial = sh.cur().flows.iter().any(|f| f.partial);
    if any_partial && release_at_least(&sh.cur().version, 35) {
        violation(sh, "DFLY SYNC after PARTIAL on a v1.35+ master".into());
        return b"-ERR invalid state\r\n".to_vec();
    }
    *sh.phase.lock().unwrap() = Phase::Synced;
    push(sh, false);
    b"+OK\r\n".to_vec()
}

fn start_stable(sh: &Arc<Shared>, text: &[String]) -> Vec<u8> {
    if !check_sync_id(sh, text) {
        return b"-ERR invalid state\r\n".to_vec();
    }
    let phase = *sh.phase.lock().unwrap();
    if phase == Phase::Handshake && sh.cur().flows.iter().any(|f| !f.partial) {
        violation(
            sh,
            "DFLY STARTSTABLE with a FULL flow and no DFLY SYNC".into(),
        );
        return b"-ERR invalid state\r\n".to_vec();
    }
    if phase == Phase::Stable {
        violation(sh, "DFLY STARTSTABLE twice".into());
        return b"-ERR invalid state\r\n".to_vec();
    }
    *sh.phase.lock().unwrap() = Phase::Stable;
    push(sh, true);
    b"+OK\r\n".to_vec()
}

/// Pushes each flow's bytes up to the split (`rest == false`) or all of them, each flow on its
/// own thread (the replica reads them while it waits for the `+OK`).
fn push(sh: &Arc<Shared>, rest: bool) {
    let flows = sh.flows.lock().unwrap();
    let session = sh.cur();
    for f in &session.flows {
        let Some(sock) = flows.get(&f.id).and_then(|s| s.try_clone().ok()) else {
            continue;
        };
        let sh2 = sh.clone();
        let id = f.id;
        let end = if rest { f.data.len() } else { f.split };
        std::thread::Builder::new()
            .name(format!("replay-push-{id}"))
            .spawn(move || {
                let mut sock = sock;
                let lock = sh2.pushed_of(id);
                let mut pushed = lock.lock().unwrap();
                let session = sh2.cur();
                let rec = session.flows.iter().find(|f| f.id == id).unwrap();
                if end > *pushed && sock.write_all(&rec.data[*pushed..end]).is_ok() {
                    *pushed = end;
                }
            })
            .unwrap();
    }
}
