//! The replica side of Dragonfly's replication handshake and the per-flow read loop.
//!
//! [`Master`] is the main connection: `AUTH`, `PING`, `INFO SERVER` (the release decides the
//! partial-sync procedure, §1.9), `REPLCONF listening-port` / `ip-address`, `REPLCONF capa eof
//! capa psync2`, `REPLCONF capa dragonfly` (parsed into a [`Hello`]), `REPLCONF CLIENT-VERSION
//! 4`, later `DFLY SYNC` and `DFLY STARTSTABLE` (protocol document §2.4). [`open_flow`] opens one
//! flow connection and sends `DFLY FLOW`; [`FlowReader`] owns that connection afterwards: one
//! refillable buffer fed to the sans-IO [`FlowDecoder`], plus the fire-and-forget `REPLCONF ACK`
//! writer (never answered, §5.1). Nothing here spawns threads: `pipeline` runs a `FlowReader`
//! on each flow thread.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::config::ReplicaConfig;
use crate::model::{Cmd, FlowId, Lsn};
use crate::net::{self, Conn, Endpoint, Stream};
use crate::rdb::{DecodeError, EventRef, FlowDecoder, FlowEvent, Limits, Step};
use crate::resp::Value;

/// Largest flow count accepted from the capa reply (Dragonfly's own replica checks the same,
/// `Replica::HandleCapaDflyResp`).
pub const MAX_FLOWS: u64 = 1024;

/// Read size of a flow connection.
const READ_CHUNK: usize = 256 << 10;

/// A Dragonfly release `vMAJOR.MINOR.PATCH`, parsed from `dragonfly_version` (`df-v1.40.1`,
/// possibly with a `git describe` suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Release {
    /// Parses `df-v1.40.1`, `v1.40.1`, `df-v1.40.1-12-gabc`; `None` when it is not a release.
    pub fn parse(s: &str) -> Option<Release> {
        let s = s.trim();
        let s = s.strip_prefix("df-").unwrap_or(s);
        let s = s.strip_prefix('v')?;
        let mut it = s.splitn(3, '.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let patch_text = it.next()?;
        let digits: String = patch_text
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let patch = digits.parse().ok()?;
        Some(Release {
            major,
            minor,
            patch,
        })
    }

    /// True when a partial sync is done the old way: `DFLY SYNC` after the PARTIAL replies
    /// and an RDB-framed stream (v1.11–v1.34, §6.3). From v1.35 `DFLY SYNC` must not be sent.
    pub fn partial_needs_sync(&self) -> bool {
        (self.major, self.minor) < (1, 35)
    }

    /// True when the master accepts `DFLY FLOW … <lsn>` at all (v1.11+).
    pub fn supports_partial(&self) -> bool {
        (self.major, self.minor) >= (1, 11)
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the master said during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// `master_replid` (40 hex characters).
    pub replid: String,
    /// The session's sync id, `SYNC<k>`.
    pub sync_id: String,
    /// Number of flows (= master shards).
    pub flow_count: u32,
    /// `DflyVersion` number of the capa reply (not monotonic across releases, §1.7).
    pub dfly_version: Option<i64>,
    /// `dragonfly_version` from `INFO SERVER`, verbatim.
    pub version_text: Option<String>,
    /// The parsed release, when `INFO SERVER` gave one.
    pub release: Option<Release>,
    /// Keys on the master (`INFO KEYSPACE`, all dbs), when it answered.
    pub master_keys: Option<u64>,
}

/// A source-side failure, naming the connection and the step.
#[derive(Debug)]
pub enum Error {
    /// A network failure on a connection (includes error replies of `request_ok`).
    Net {
        /// `main` or `flow N`.
        conn: String,
        /// The step (`REPLCONF capa dragonfly`, `DFLY FLOW`, reading the stream…).
        step: &'static str,
        /// The cause (boxed: a net error is large).
        source: Box<net::Error>,
    },
    /// The master answered something a Dragonfly master never answers.
    Protocol {
        /// `main` or `flow N`.
        conn: String,
        /// What was wrong.
        detail: String,
    },
    /// The flow stream could not be decoded.
    Decode {
        /// The flow.
        flow: FlowId,
        /// The decoder's error (with its byte position).
        source: DecodeError,
    },
    /// The master closed a flow connection (a flow never ends on its own).
    FlowClosed {
        /// The flow.
        flow: FlowId,
        /// Bytes read from it (after the FLOW reply).
        offset: u64,
    },
    /// Reading or writing a flow socket failed.
    FlowIo {
        /// The flow.
        flow: FlowId,
        /// What was being done.
        action: &'static str,
        /// Bytes read from it so far.
        offset: u64,
        /// The cause.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Net { conn, step, source } => write!(f, "source {conn}: {step}: {source}"),
            Error::Protocol { conn, detail } => write!(f, "source {conn}: {detail}"),
            Error::Decode { flow, source } => write!(f, "{flow}: snapshot/journal {source}"),
            Error::FlowClosed { flow, offset } => write!(
                f,
                "{flow}: the master closed the connection after {offset} bytes (a flow never ends; \
                 the replication session is over)"
            ),
            Error::FlowIo {
                flow,
                action,
                offset,
                source,
            } => write!(f, "{flow}: {action} failed at byte {offset}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Net { source, .. } => Some(source.as_ref()),
            Error::Decode { source, .. } => Some(source),
            Error::FlowIo { source, .. } => Some(source),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

fn net_err<'a>(conn: &'a str, step: &'static str) -> impl FnOnce(net::Error) -> Error + 'a {
    move |source| Error::Net {
        conn: conn.to_string(),
        step,
        source: Box::new(source),
    }
}

fn protocol(conn: &str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        conn: conn.to_string(),
        detail: detail.into(),
    }
}

/// The main connection, kept open for the whole session (closing it ends the session on the
/// master, §1.8).
#[derive(Debug)]
pub struct Master {
    conn: Conn,
    hello: Hello,
}

impl Master {
    /// Connects and runs the handshake of §2.4 up to `REPLCONF CLIENT-VERSION`.
    pub fn handshake(ep: &Endpoint, replica: &ReplicaConfig) -> Result<Master> {
        let m = "main";
        let mut conn = Conn::connect(ep).map_err(net_err(m, "connect"))?;
        let pong = conn
            .request_ok(&Cmd::new("PING"))
            .map_err(net_err(m, "PING"))?;
        if pong.as_str() != Some("PONG") {
            return Err(protocol(m, format!("PING answered {pong:?}")));
        }
        // §1.9: the release decides the partial-sync procedure; a master that refuses INFO
        // (ACL `+ping +dfly +replconf` only) is treated as "release unknown".
        let version_text = match conn.request(&Cmd::from_args(["INFO", "SERVER"])) {
            Ok(v) => v
                .as_bytes()
                .and_then(|b| info_field(b, "dragonfly_version")),
            Err(e) => return Err(net_err(m, "INFO SERVER")(e)),
        };
        let release = version_text.as_deref().and_then(Release::parse);
        // The master's key count, for the full-sync ETA (optional: refused or absent = none).
        let master_keys = match conn.request(&Cmd::from_args(["INFO", "KEYSPACE"])) {
            Ok(v) => v.as_bytes().and_then(keyspace_keys),
            Err(e) => return Err(net_err(m, "INFO KEYSPACE")(e)),
        };
        let mut lp = Cmd::from_args(["REPLCONF", "listening-port"]);
        lp.arg_int(replica.listening_port);
        conn.request_ok(&lp)
            .map_err(net_err(m, "REPLCONF listening-port"))?;
        if let Some(ip) = &replica.announce_ip {
            conn.request_ok(&Cmd::from_args(["REPLCONF", "ip-address", ip.as_str()]))
                .map_err(net_err(m, "REPLCONF ip-address"))?;
        }
        conn.request_ok(&Cmd::from_args([
            "REPLCONF", "capa", "eof", "capa", "psync2",
        ]))
        .map_err(net_err(m, "REPLCONF capa eof capa psync2"))?;
        let capa = conn
            .request_ok(&Cmd::from_args(["REPLCONF", "capa", "dragonfly"]))
            .map_err(net_err(m, "REPLCONF capa dragonfly"))?;
        let mut hello = parse_capa(&capa).map_err(|d| protocol(m, d))?;
        hello.version_text = version_text;
        hello.release = release;
        hello.master_keys = master_keys;
        // CLIENT-VERSION 4 turns LSN opcodes on everywhere and never the VER6-only features
        // (§1.6); masters before v1.16 do not know the sub-command, so it is skipped there.
        if hello
            .release
            .map_or(true, |r| (r.major, r.minor) >= (1, 16))
        {
            conn.request_ok(&Cmd::from_args(["REPLCONF", "CLIENT-VERSION", "4"]))
                .map_err(net_err(m, "REPLCONF CLIENT-VERSION"))?;
        }
        log::info!(
            "master {}: release {}, replid {}, {}, {} flow(s)",
            ep.addr,
            hello.version_text.as_deref().unwrap_or("unknown"),
            hello.replid,
            hello.sync_id,
            hello.flow_count
        );
        Ok(Master { conn, hello })
    }

    /// What the handshake learned.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// `DFLY SYNC <sync_id>` (full sync, or a partial sync on ≤ v1.34). The flows must be
    /// read while this waits: their bytes can come before the `+OK` (§2.2).
    pub fn sync(&mut self, timeout: Duration) -> Result<()> {
        self.phase_command("SYNC", timeout)
    }

    /// `DFLY STARTSTABLE <sync_id>` (after every flow delivered FULLSYNC_END, §2.3).
    pub fn start_stable(&mut self, timeout: Duration) -> Result<()> {
        self.phase_command("STARTSTABLE", timeout)
    }

    fn phase_command(&mut self, sub: &'static str, timeout: Duration) -> Result<()> {
        let step = if sub == "SYNC" {
            "DFLY SYNC"
        } else {
            "DFLY STARTSTABLE"
        };
        self.conn
            .set_read_timeout(Some(timeout))
            .map_err(net_err("main", step))?;
        let r = self
            .conn
            .request_ok(&Cmd::from_args(["DFLY", sub, self.hello.sync_id.as_str()]))
            .map_err(net_err("main", step))?;
        if !r.is_ok() {
            return Err(protocol("main", format!("{step} answered {r:?}")));
        }
        Ok(())
    }

    /// Graceful close (§5.4 #3): half-close, then wait briefly for the master's FIN.
    pub fn close(self) {
        close_stream(self.conn.into_parts().0);
    }
}

/// Half-closes a connection, reads (and drops) until the peer closes, for at most two seconds,
/// then drops it: a FIN, never an RST — closing a socket with unread data makes the kernel send
/// an RST, which is what hurts a master (§5.4 #3). Dragonfly ends the whole session on the
/// first FIN and closes the other connections itself.
pub fn close_stream(stream: Stream) {
    let tcp = stream.tcp();
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(100)));
    let mut s = stream;
    let mut buf = vec![0u8; 64 << 10];
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

/// A field of an `INFO` reply.
fn info_field(info: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(info);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

/// Sums `keys=N` over the `dbX:keys=N,expires=…` lines of an `INFO KEYSPACE` reply; `None`
/// when there is no such line.
fn keyspace_keys(info: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(info);
    let mut total = None;
    for l in text.lines().filter(|l| l.starts_with("db")) {
        let n = l
            .split_once(':')
            .and_then(|(_, rest)| rest.split(',').find_map(|kv| kv.strip_prefix("keys=")))
            .and_then(|n| n.trim().parse::<u64>().ok());
        if let Some(n) = n {
            total = Some(total.unwrap_or(0u64).saturating_add(n));
        }
    }
    total
}

/// Parses the `capa dragonfly` reply (§1.5): 4 elements up to v1.39, 5 from v1.40. A plain
/// `OK` means the server is not Dragonfly.
pub fn parse_capa(v: &Value) -> std::result::Result<Hello, String> {
    if v.is_ok() {
        return Err(
            "the master answered `REPLCONF capa dragonfly` with OK: it is not Dragonfly \
             (a Redis master?)"
                .into(),
        );
    }
    let a = v
        .as_array()
        .ok_or_else(|| format!("`REPLCONF capa dragonfly` answered {v:?}, not an array"))?;
    if a.len() < 3 {
        return Err(format!(
            "`REPLCONF capa dragonfly` answered {} element(s), expected 4 or 5",
            a.len()
        ));
    }
    let replid = a[0]
        .as_str()
        .filter(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("master_replid {:?} is not 40 hex characters", a[0]))?
        .to_string();
    let sync_id = a[1]
        .as_str()
        .filter(|s| s.starts_with("SYNC") && s.len() > 4 && s.len() < 32)
        .ok_or_else(|| format!("sync id {:?} is not SYNC<n>", a[1]))?
        .to_string();
    let n = a[2]
        .as_int()
        .filter(|n| (1..=MAX_FLOWS as i64).contains(n))
        .ok_or_else(|| format!("flow count {:?} is not in 1..={MAX_FLOWS}", a[2]))?;
    Ok(Hello {
        replid,
        sync_id,
        flow_count: n as u32,
        dfly_version: a.get(3).and_then(Value::as_int),
        version_text: None,
        release: None,
        master_keys: None,
    })
}

/// One flow connection right after its `DFLY FLOW` reply.
#[derive(Debug)]
pub struct FlowConn {
    /// The flow.
    pub id: FlowId,
    /// The master answered PARTIAL.
    pub partial: bool,
    /// This flow's eof token.
    pub token: String,
    conn: Conn,
}

/// Opens flow `id`: connect, `AUTH`, `DFLY FLOW <replid> <sync_id> <id> [lsn]` (§2.1).
pub fn open_flow(
    ep: &Endpoint,
    hello: &Hello,
    id: FlowId,
    lsn: Option<Lsn>,
    timeout: Duration,
) -> Result<FlowConn> {
    let name = id.to_string();
    let mut conn = Conn::connect(ep).map_err(net_err(&name, "connect"))?;
    conn.set_read_timeout(Some(timeout))
        .map_err(net_err(&name, "DFLY FLOW"))?;
    let mut cmd = Cmd::from_args([
        "DFLY",
        "FLOW",
        hello.replid.as_str(),
        hello.sync_id.as_str(),
    ]);
    cmd.arg_int(id.0);
    if let Some(l) = lsn {
        cmd.arg_int(l.0);
    }
    let r = conn.request_ok(&cmd).map_err(net_err(&name, "DFLY FLOW"))?;
    let a = r
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| protocol(&name, format!("DFLY FLOW answered {r:?}")))?;
    let partial = match a[0].as_str() {
        Some("FULL") => false,
        Some("PARTIAL") => true,
        _ => return Err(protocol(&name, format!("DFLY FLOW answered {r:?}"))),
    };
    let token = a[1]
        .as_str()
        .filter(|t| t.len() == 40)
        .ok_or_else(|| protocol(&name, format!("eof token {:?} is not 40 bytes", a[1])))?
        .to_string();
    Ok(FlowConn {
        id,
        partial,
        token,
        conn,
    })
}

/// Owns one flow connection after its FLOW reply: reads into one rolled buffer, decodes with
/// [`FlowDecoder`], writes `REPLCONF ACK`s.
#[derive(Debug)]
pub struct FlowReader {
    id: FlowId,
    stream: Stream,
    /// Read buffer: `buf[pos..end]` is received and not yet decoded. Bytes past `end` are
    /// initialised scratch (zeroed once when the buffer grows, not on every read: a 256 KiB
    /// memset per read was ~10 % of a flow thread's CPU in stable sync, where reads are small).
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    decoder: FlowDecoder,
    received: u64,
    ack_buf: Vec<u8>,
}

impl FlowReader {
    /// Takes over a flow connection. `old_procedure` = a PARTIAL flow of a ≤ v1.34 master,
    /// which is RDB-framed like a FULL one (§6.3).
    pub fn new(flow: FlowConn, old_procedure: bool, limits: Limits) -> FlowReader {
        let decoder = if flow.partial && !old_procedure {
            FlowDecoder::new_partial(limits)
        } else {
            FlowDecoder::new_full(flow.token.as_bytes(), limits)
        };
        let (stream, rest) = flow.conn.into_parts();
        FlowReader {
            id: flow.id,
            stream,
            received: rest.len() as u64,
            end: rest.len(),
            buf: rest,
            pos: 0,
            decoder,
            ack_buf: Vec::with_capacity(64),
        }
    }

    /// The flow.
    pub fn id(&self) -> FlowId {
        self.id
    }

    /// Bytes received so far (after the FLOW reply).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Sets how long one read may block; `next_event` returns `Ok(None)` after it.
    pub fn set_read_timeout(&self, t: Duration) -> Result<()> {
        self.stream
            .tcp()
            .set_read_timeout(Some(t))
            .map_err(|source| Error::FlowIo {
                flow: self.id,
                action: "setting the read timeout",
                offset: self.decoder.offset(),
                source,
            })
    }

    /// True when every received byte was decoded (the next call will read the socket).
    pub fn drained(&self) -> bool {
        self.pos >= self.end
    }

    /// The next event; `Ok(None)` when a read timed out with nothing decodable.
    pub fn next_event(&mut self) -> Result<Option<FlowEvent>> {
        self.next_with(|ev| ev.into_owned())
    }

    /// The next event, handed to `f` as the decoder produced it: whole string keys of the
    /// snapshot come borrowed from the read buffer, not copied ([`FlowDecoder::step_ref`]).
    /// Returns what `f` returned; `Ok(None)` when a read timed out with nothing decodable.
    pub fn next_with<R>(&mut self, f: impl FnOnce(EventRef<'_>) -> R) -> Result<Option<R>> {
        loop {
            // Always ask the decoder first, even with no unread input: it may hold items
            // already decoded from a compressed blob or a journal blob.
            let (step, used) = self
                .decoder
                .step_ref(self.buf.get(self.pos..self.end).unwrap_or_default())
                .map_err(|source| Error::Decode {
                    flow: self.id,
                    source,
                })?;
            let used = used.min(self.end.saturating_sub(self.pos));
            match step {
                Step::Item(ev) => {
                    let r = f(ev);
                    self.pos += used;
                    return Ok(Some(r));
                }
                Step::NeedMore => self.pos += used,
                Step::End => {
                    return Err(Error::FlowClosed {
                        flow: self.id,
                        offset: self.decoder.offset(),
                    })
                }
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes; false on a read timeout. The unread tail is moved to the front
    /// (rolled, not reallocated), and the buffer grows only when it is full.
    fn fill(&mut self) -> Result<bool> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        let old = self.end;
        let want = old.clamp(READ_CHUNK, 16 << 20);
        if self.buf.len() < old + want {
            self.buf.resize(old + want, 0);
        }
        let r = loop {
            match self.stream.read(&mut self.buf[old..old + want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = *r.as_ref().unwrap_or(&0);
        self.end = old + n.min(want);
        match r {
            Ok(0) => Err(Error::FlowClosed {
                flow: self.id,
                offset: self.received,
            }),
            Ok(n) => {
                self.received += n as u64;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(source) => Err(Error::FlowIo {
                flow: self.id,
                action: "reading",
                offset: self.received,
                source,
            }),
        }
    }

    /// Sends `REPLCONF ACK <next>` (never answered, §5.1).
    pub fn ack(&mut self, next: Lsn) -> Result<()> {
        self.ack_buf.clear();
        let mut c = Cmd::from_args(["REPLCONF", "ACK"]);
        c.arg_int(next.0);
        c.encode_resp(&mut self.ack_buf);
        self.stream
            .write_all(&self.ack_buf)
            .and_then(|()| self.stream.flush())
            .map_err(|source| Error::FlowIo {
                flow: self.id,
                action: "sending REPLCONF ACK",
                offset: self.received,
                source,
            })
    }

    /// Gives the connection back for a graceful close.
    pub fn into_stream(self) -> Stream {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_parse_and_procedure() {
        let r = Release::parse("df-v1.40.1").unwrap();
        assert_eq!((r.major, r.minor, r.patch), (1, 40, 1));
        assert!(!r.partial_needs_sync());
        assert!(Release::parse("df-v1.34.2").unwrap().partial_needs_sync());
        assert!(!Release::parse("df-v1.35.0-3-gabcdef")
            .unwrap()
            .partial_needs_sync());
        assert_eq!(Release::parse("dev"), None);
        assert_eq!(Release::parse("df-v1.x.1"), None);
    }

    #[test]
    fn capa_shapes() {
        let id = "77765b3cfa949a80c5a3f73ed1ec40be99007fb9";
        let five = Value::Array(vec![
            Value::Simple(id.into()),
            Value::Simple(b"SYNC7".to_vec()),
            Value::Int(2),
            Value::Int(5),
            Value::Simple(id.into()),
        ]);
        let h = parse_capa(&five).unwrap();
        assert_eq!((h.flow_count, h.sync_id.as_str()), (2, "SYNC7"));
        assert_eq!(h.dfly_version, Some(5));
        assert!(parse_capa(&Value::Simple(b"OK".to_vec())).is_err());
        let bad_n = Value::Array(vec![
            Value::Simple(id.into()),
            Value::Simple(b"SYNC7".to_vec()),
            Value::Int(0),
        ]);
        assert!(parse_capa(&bad_n).unwrap_err().contains("flow count"));
        let bad_id = Value::Array(vec![
            Value::Simple(b"short".to_vec()),
            Value::Simple(b"SYNC7".to_vec()),
            Value::Int(2),
        ]);
        assert!(parse_capa(&bad_id).is_err());
    }

    #[test]
    fn keyspace_sum() {
        let info = b"# Keyspace\r\ndb0:keys=10,expires=1,avg_ttl=0\r\ndb3:keys=5,expires=0\r\n";
        assert_eq!(keyspace_keys(info), Some(15));
        assert_eq!(keyspace_keys(b"# Keyspace\r\n"), None);
    }

    #[test]
    fn info_field_found() {
        let info = b"# Server\r\nredis_version:7.4.0\r\ndragonfly_version:df-v1.34.2\r\n";
        assert_eq!(
            info_field(info, "dragonfly_version").as_deref(),
            Some("df-v1.34.2")
        );
        assert_eq!(info_field(info, "nope"), None);
    }
}
