//! The per-key hot path of the checker: pipelines of one-key commands (`TYPE k`,
//! `PEXPIRETIME k`, `EXISTS k1 k2 ...`) written straight into a connection's write buffer, and
//! their replies read without building a [`Value`] when they are a status line or an integer.
//!
//! Measured on 1M keys (docs/check.md): with one `Cmd` per command and one `Value` per reply,
//! malloc/free were 40 % of the checker's CPU. Here a pipeline allocates nothing per key once
//! the buffers have grown; `+string` becomes a [`Kind`] and `:1` an integer in place. Every
//! other reply (errors, nil, anything unexpected) goes through the ordinary RESP decoder
//! ([`resp::decode`]) with its limits, so nothing a server sends can make this code allocate
//! without bound or panic.
//!
//! A [`Raw`] is made by opening an ordinary [`Conn`] (TLS, AUTH, `SELECT`) and taking its
//! transport and already-buffered bytes with [`Conn::into_parts`].

use super::compare::Kind;
use super::side::{Side, Which};
use super::Error;
use crate::model::{Cmd, DbIndex};
use crate::net::{self, Cause, Conn, Phase, Stream};
use crate::resp::{self, Value};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;

/// Smallest read into the buffer.
const READ_CHUNK: usize = 64 << 10;
/// A write buffer above this is dropped after use instead of kept.
const KEEP_WBUF: usize = 4 << 20;

/// A reply of the hot path.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A status line naming a type (`+string`, `+none`, `+ReJSON-RL`, ...).
    Type(Kind),
    /// `:n`.
    Int(i64),
    /// Anything else, decoded in full.
    Other(Value),
}

impl Reply {
    /// The reply as a [`Value`] (for error classification and messages).
    pub fn to_value(&self) -> Value {
        match self {
            Reply::Type(k) => Value::Simple(k.name().as_bytes().to_vec()),
            Reply::Int(n) => Value::Int(*n),
            Reply::Other(v) => v.clone(),
        }
    }

    /// The integer, if the reply is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            Reply::Other(v) => v.as_int(),
            Reply::Type(_) => None,
        }
    }
}

/// One pipelining connection with its own buffers.
pub struct Raw {
    addr: String,
    stream: Stream,
    wbuf: Vec<u8>,
    /// Read buffer, zeroed only when it grows: bytes `rpos..rend` are unparsed input.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    consumed: u64,
    limits: resp::Limits,
}

impl Raw {
    /// Connects to `ep` (TLS and AUTH as configured) and selects `db`.
    pub fn open(ep: &net::Endpoint, db: DbIndex) -> Result<Raw, net::Error> {
        let mut c = Conn::connect(ep)?;
        if db.0 != 0 {
            let mut cmd = Cmd::new("SELECT");
            cmd.arg_int(db.0);
            c.request_ok(&cmd)?;
        }
        let addr = c.addr().to_string();
        let (stream, rbuf) = c.into_parts();
        Ok(Raw {
            addr,
            stream,
            wbuf: Vec::new(),
            rend: rbuf.len(),
            rbuf,
            rpos: 0,
            consumed: 0,
            limits: resp::Limits::default(),
        })
    }

    /// Bytes of replies consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Appends `args` as one RESP command to the write buffer.
    pub fn push<'a>(&mut self, args: impl ExactSizeIterator<Item = &'a [u8]>) {
        let w = &mut self.wbuf;
        let mut n = itoa::Buffer::new();
        w.push(b'*');
        w.extend_from_slice(n.format(args.len()).as_bytes());
        w.extend_from_slice(b"\r\n");
        for a in args {
            w.push(b'$');
            w.extend_from_slice(n.format(a.len()).as_bytes());
            w.extend_from_slice(b"\r\n");
            w.extend_from_slice(a);
            w.extend_from_slice(b"\r\n");
        }
    }

    /// Writes the buffered commands.
    pub fn flush(&mut self) -> Result<(), net::Error> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = self
            .stream
            .write_all(&self.wbuf)
            .and_then(|()| self.stream.flush());
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WBUF {
            self.wbuf = Vec::new();
        }
        r.map_err(|e| net::Error::io(&self.addr, Phase::Write, e))
    }

    /// Reads the next reply.
    pub fn next(&mut self) -> Result<Reply, net::Error> {
        loop {
            if let Some(r) = self.try_parse()? {
                return Ok(r);
            }
            self.fill()?;
        }
    }

    /// One reply from the buffer, or `None` when more bytes are needed.
    fn try_parse(&mut self) -> Result<Option<Reply>, net::Error> {
        let buf = self.rbuf.get(self.rpos..self.rend).unwrap_or(&[]);
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first == b'+' || first == b':' {
            // Status lines and integers are short; find the CRLF without the full decoder.
            if let Some(cr) = memchr::memchr(b'\r', buf) {
                if buf.get(cr + 1) == Some(&b'\n') {
                    let line = buf.get(1..cr).unwrap_or(&[]);
                    let fast = if first == b'+' {
                        Some(Reply::Type(Kind::from_name(line)))
                    } else {
                        parse_int(line).map(Reply::Int)
                    };
                    if let Some(r) = fast {
                        self.consume(cr + 2);
                        return Ok(Some(r));
                    }
                }
            }
        }
        // Everything else (and a malformed line) goes through the full decoder, which
        // applies the limits and names the offending byte.
        match resp::decode(buf, &self.limits) {
            Ok(Some((v, n))) => {
                self.consume(n);
                Ok(Some(Reply::Other(v)))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let pos = self.consumed.saturating_add(e.pos as u64);
                let e = resp::DecodeError {
                    pos: usize::try_from(pos).unwrap_or(usize::MAX),
                    kind: e.kind,
                };
                Err(net::Error::new(&self.addr, Phase::Read, Cause::Protocol(e)))
            }
        }
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.rend.saturating_sub(self.rpos));
        self.rpos += n;
        self.consumed += n as u64;
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        }
    }

    fn fill(&mut self) -> Result<(), net::Error> {
        if self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        // Grow with the buffered data so a big reply is re-scanned O(log n) times; the new
        // part is zeroed once, not before every read (memset was 5 % of the checker's CPU).
        let want = self.rend.max(READ_CHUNK);
        if self.rbuf.len().saturating_sub(self.rend) < want {
            self.rbuf.resize(self.rend + want, 0);
        }
        let r = loop {
            match self
                .stream
                .read(self.rbuf.get_mut(self.rend..).unwrap_or(&mut []))
            {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match r {
            Ok(0) => Err(net::Error::new(&self.addr, Phase::Read, Cause::Closed)),
            Ok(n) => {
                self.rend = (self.rend + n).min(self.rbuf.len());
                Ok(())
            }
            Err(e) => Err(net::Error::io(&self.addr, Phase::Read, e)),
        }
    }
}

/// A decimal `i64` line; `None` if it is not one (the full decoder then reports it).
fn parse_int(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// A worker's hot-path connections to one side, one per (master, db), opened on first use.
pub struct FastPool<'s> {
    side: &'s Side,
    /// One per (master, db), found by a linear search: there are few, and hashing the pair
    /// for every key cost more than the search (perf).
    conns: Vec<((usize, u32), Raw)>,
    /// The connection (index into `conns`) of each request pushed since the last
    /// [`FastPool::recv`].
    order: Vec<usize>,
}

impl<'s> FastPool<'s> {
    /// An empty pool.
    pub fn new(side: &'s Side) -> FastPool<'s> {
        FastPool {
            side,
            conns: Vec::new(),
            order: Vec::new(),
        }
    }

    fn which(&self) -> Which {
        self.side.which
    }

    /// The index in `conns` of the connection to master `node` with `db` selected.
    fn conn(&mut self, node: usize, db: DbIndex) -> Result<usize, Error> {
        let side = self.side;
        if let Some(i) = self.conns.iter().position(|(k, _)| *k == (node, db.0)) {
            return Ok(i);
        }
        let ep = side.endpoints.get(node).ok_or_else(|| Error::Reply {
            side: side.which.name(),
            addr: side.addr.clone(),
            command: "CLUSTER SHARDS".into(),
            detail: format!("no master number {node}"),
        })?;
        let raw = Raw::open(ep, db).map_err(|e| Error::net(side.which, e))?;
        self.conns.push(((node, db.0), raw));
        Ok(self.conns.len() - 1)
    }

    /// Queues one command for master `node`, database `db`.
    pub fn push<'a>(
        &mut self,
        node: usize,
        db: DbIndex,
        args: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<(), Error> {
        let i = self.conn(node, db)?;
        if let Some((_, c)) = self.conns.get_mut(i) {
            c.push(args);
            self.order.push(i);
        }
        Ok(())
    }

    /// Writes every queued command (one write per connection).
    pub fn send(&mut self) -> Result<(), Error> {
        self.side.limiter.pay(self.order.len() as u64);
        let which = self.which();
        for (_, c) in &mut self.conns {
            c.flush().map_err(|e| Error::net(which, e))?;
        }
        Ok(())
    }

    /// Reads the replies of every command sent, in the order they were pushed, into `out`
    /// (cleared first).
    pub fn recv(&mut self, out: &mut Vec<Reply>) -> Result<(), Error> {
        out.clear();
        out.reserve(self.order.len());
        let which = self.which();
        let before: u64 = self.conns.iter().map(|(_, c)| c.consumed()).sum();
        let order = std::mem::take(&mut self.order);
        for &i in &order {
            let Some((_, c)) = self.conns.get_mut(i) else {
                return Err(Error::Thread(format!(
                    "{}: connection vanished while reading a pipeline",
                    which.name()
                )));
            };
            out.push(c.next().map_err(|e| Error::net(which, e))?);
        }
        self.order = order;
        self.order.clear();
        let read = self
            .conns
            .iter()
            .map(|(_, c)| c.consumed())
            .sum::<u64>()
            .saturating_sub(before);
        self.side.bytes.fetch_add(read, Ordering::Relaxed);
        self.side.bandwidth.pay(read);
        Ok(())
    }

    /// The address of master `node` (for messages).
    pub fn addr(&self, node: usize) -> &str {
        self.side
            .endpoints
            .get(node)
            .map(|e| e.addr.as_str())
            .unwrap_or(self.side.addr.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server that checks the pipeline it receives and answers `reply` in small
    /// pieces, so replies are split across reads.
    fn serve(expect: &'static [u8], reply: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = vec![0u8; expect.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, expect, "{}", String::from_utf8_lossy(&got));
            for piece in reply.chunks(3) {
                s.write_all(piece).unwrap();
                s.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        (addr, h)
    }

    #[test]
    fn pipeline_of_types_ints_and_other_replies() {
        let (addr, h) = serve(
            b"*2\r\n$4\r\nTYPE\r\n$1\r\na\r\n*3\r\n$6\r\nEXISTS\r\n$1\r\na\r\n$2\r\nbc\r\n",
            b"+string\r\n+ReJSON-RL\r\n:-2\r\n-WRONGTYPE x\r\n$-1\r\n+none\r\n:12\r\n$3\r\nabc\r\n",
        );
        let mut r = Raw::open(&net::Endpoint::plain(addr), DbIndex(0)).unwrap();
        r.push([&b"TYPE"[..], b"a"].into_iter());
        r.push([&b"EXISTS"[..], b"a", b"bc"].into_iter());
        r.flush().unwrap();
        assert_eq!(r.next().unwrap(), Reply::Type(Kind::String));
        assert_eq!(
            r.next().unwrap(),
            Reply::Type(Kind::Other("ReJSON-RL".into()))
        );
        assert_eq!(r.next().unwrap(), Reply::Int(-2));
        assert!(matches!(r.next().unwrap(), Reply::Other(Value::Error(_))));
        assert_eq!(r.next().unwrap(), Reply::Other(Value::Nil));
        assert_eq!(r.next().unwrap(), Reply::Type(Kind::None));
        assert_eq!(r.next().unwrap().as_int(), Some(12));
        assert_eq!(
            r.next().unwrap(),
            Reply::Other(Value::Bulk(b"abc".to_vec()))
        );
        assert_eq!(r.consumed(), 66);
        // The server is gone: a clean error, not a hang or a panic.
        h.join().unwrap();
        assert!(r.next().is_err());
    }

    #[test]
    fn garbage_is_a_positioned_protocol_error() {
        let (addr, h) = serve(b"", b":7\r\n:12x\r\n");
        let mut r = Raw::open(&net::Endpoint::plain(addr), DbIndex(0)).unwrap();
        assert_eq!(r.next().unwrap(), Reply::Int(7));
        let e = r.next().unwrap_err();
        assert!(
            matches!(e.cause, Cause::Protocol(ref d) if d.pos >= 4),
            "{e:?}"
        );
        h.join().unwrap();
    }

    #[test]
    fn ints_parse_strictly() {
        assert_eq!(parse_int(b"-2"), Some(-2));
        assert_eq!(parse_int(b"123"), Some(123));
        assert_eq!(parse_int(b"1x"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"99999999999999999999"), None);
    }
}
