//! [`Conn`]: one blocking connection (plain TCP or TLS) with a single read buffer shared by
//! RESP replies and raw stream reads.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};
use socket2::{SockRef, TcpKeepalive};

use super::error::{Cause, Error, Phase, Result};
use super::{tls, Endpoint};
use crate::model::Cmd;
use crate::resp::{self, Value};

/// Smallest read issued into the buffer; reads grow with the buffered data so that a large
/// reply is re-scanned O(log n) times, not once per chunk.
const MIN_READ: usize = 64 << 10;
/// Largest single read.
const MAX_READ: usize = 16 << 20;

/// The transport under a [`Conn`].
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath (for timeouts, addresses, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A connected, authenticated connection to one server.
///
/// Replies are decoded from one buffer; whatever arrived after the last reply stays there
/// ([`Conn::buffered`]) and is returned first by `Conn`'s [`Read`] implementation.
pub struct Conn {
    stream: Stream,
    addr: String,
    limits: resp::Limits,
    /// Read buffer; unread bytes are `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Bytes consumed from this connection so far (for error positions).
    consumed: u64,
    /// Encoding buffer for outgoing commands; cleared after every send because it may have
    /// held `AUTH` and its password.
    wbuf: Vec<u8>,
}

impl std::fmt::Debug for Conn {
    /// Address, transport and buffer fill only: never the bytes (they may hold a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("addr", &self.addr)
            .field("tls", &matches!(self.stream, Stream::Tls(_)))
            .field("buffered", &self.buffered().len())
            .field("consumed", &self.consumed)
            .finish()
    }
}

impl Conn {
    /// Connects, runs the TLS handshake if configured, then `AUTH` if a password or user is
    /// set.
    pub fn connect(ep: &Endpoint) -> Result<Conn> {
        let mut c = Conn::connect_unauthenticated(ep)?;
        c.auth(ep)?;
        Ok(c)
    }

    /// Connects (TCP and TLS) without sending `AUTH`.
    pub fn connect_unauthenticated(ep: &Endpoint) -> Result<Conn> {
        let addr = ep.addr.as_str();
        let tcp = connect_tcp(addr, ep.connect_timeout)?;
        let stream = match &ep.tls {
            None => Stream::Plain(tcp),
            Some(opts) => {
                let cfg = tls::client_config(opts, addr)
                    .map_err(|m| Error::new(addr, Phase::TlsSetup, Cause::Tls(m)))?;
                let name = tls::server_name(opts, addr)
                    .map_err(|m| Error::new(addr, Phase::TlsSetup, Cause::Config(m)))?;
                let mut session = ClientConnection::new(cfg, name)
                    .map_err(|e| Error::new(addr, Phase::TlsSetup, Cause::Tls(e.to_string())))?;
                let mut tcp = tcp;
                let hs = |e: io::Error| match tls::describe_handshake_error(&e, opts) {
                    Some(m) => Error::new(addr, Phase::TlsHandshake, Cause::Tls(m)),
                    None => Error::io(addr, Phase::TlsHandshake, e),
                };
                set_timeouts(&tcp, Some(ep.connect_timeout))
                    .map_err(|e| Error::io(addr, Phase::TlsHandshake, e))?;
                while session.is_handshaking() {
                    session.complete_io(&mut tcp).map_err(hs)?;
                }
                Stream::Tls(Box::new(StreamOwned::new(session, tcp)))
            }
        };
        set_timeouts(stream.tcp(), ep.io_timeout)
            .map_err(|e| Error::io(addr, Phase::Connect, e))?;
        log::debug!(
            "connected to {addr} ({})",
            if ep.tls.is_some() { "TLS" } else { "plain TCP" }
        );
        Ok(Conn {
            stream,
            addr: addr.to_string(),
            limits: resp::Limits::default(),
            rbuf: Vec::new(),
            rpos: 0,
            consumed: 0,
            wbuf: Vec::new(),
        })
    }

    /// Sends `AUTH [user] password` when the endpoint has credentials (a user without a
    /// password sends an empty one, which a `nopass` ACL user accepts). The password is never
    /// logged or put into an error.
    fn auth(&mut self, ep: &Endpoint) -> Result<()> {
        if ep.password.is_none() && ep.username.is_none() {
            return Ok(());
        }
        let pass = ep.password.as_ref().map(|p| p.expose()).unwrap_or("");
        let mut cmd = Cmd::new("AUTH");
        if let Some(u) = &ep.username {
            cmd.arg(u.as_bytes());
        }
        cmd.arg(pass.as_bytes());
        let who = match &ep.username {
            Some(u) => format!("user {}", crate::model::escape_bytes(u.as_bytes())),
            None => "the default user".to_string(),
        };
        let reply = self.request(&cmd).map_err(|mut e| {
            if matches!(e.phase, Phase::Write | Phase::Read) {
                e.phase = Phase::Auth;
            }
            e
        })?;
        match reply.server_error() {
            // The cause keeps the classified reply for callers that branch on it; the text
            // names the user, never the password.
            Some(err) => Err(Error::new(
                &self.addr,
                Phase::Auth,
                Cause::Server(resp::ServerError {
                    kind: resp::ErrorKind::Auth,
                    message: format!("the credentials of {who} were refused: {}", err.message),
                }),
            )),
            None => {
                log::debug!("authenticated to {} as {who}", self.addr);
                Ok(())
            }
        }
    }

    /// `host:port` this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Replaces the caps applied to replies.
    pub fn set_limits(&mut self, limits: resp::Limits) {
        self.limits = limits;
    }

    /// Sets the read timeout (`None` = block forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<()> {
        self.stream
            .tcp()
            .set_read_timeout(t)
            .map_err(|e| Error::io(&self.addr, Phase::Read, e))
    }

    /// Sets the write timeout (`None` = block forever).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> Result<()> {
        self.stream
            .tcp()
            .set_write_timeout(t)
            .map_err(|e| Error::io(&self.addr, Phase::Write, e))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// Writes one command and flushes.
    pub fn send(&mut self, cmd: &Cmd) -> Result<()> {
        self.send_all(std::iter::once(cmd))
    }

    /// Writes several commands in one write (a pipeline) and flushes.
    pub fn send_all<'a>(&mut self, cmds: impl IntoIterator<Item = &'a Cmd>) -> Result<()> {
        self.wbuf.clear();
        for c in cmds {
            c.encode_resp(&mut self.wbuf);
        }
        let r = self
            .stream
            .write_all(&self.wbuf)
            .and_then(|()| self.stream.flush());
        self.wbuf.clear();
        if self.wbuf.capacity() > MAX_READ {
            // Do not keep a huge buffer alive after one big command.
            self.wbuf = Vec::new();
        }
        r.map_err(|e| Error::io(&self.addr, Phase::Write, e))
    }

    /// Reads one reply (error replies are returned as values, not as `Err`).
    pub fn read_reply(&mut self) -> Result<Value> {
        loop {
            if self.rpos < self.rbuf.len() {
                match resp::decode(&self.rbuf[self.rpos..], &self.limits) {
                    Ok(Some((v, n))) => {
                        self.consume(n);
                        return Ok(v);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let pos = self.consumed.saturating_add(e.pos as u64);
                        let e = resp::DecodeError {
                            pos: usize::try_from(pos).unwrap_or(usize::MAX),
                            kind: e.kind,
                        };
                        return Err(Error::new(&self.addr, Phase::Read, Cause::Protocol(e)));
                    }
                }
            }
            if self
                .fill()
                .map_err(|e| Error::io(&self.addr, Phase::Read, e))?
                == 0
            {
                return Err(Error::new(&self.addr, Phase::Read, Cause::Closed));
            }
        }
    }

    /// Sends a command and reads its reply (error replies are returned as values).
    pub fn request(&mut self, cmd: &Cmd) -> Result<Value> {
        self.send(cmd)?;
        self.read_reply()
    }

    /// Like [`Conn::request`], but an error reply becomes an `Err` with [`Cause::Server`].
    pub fn request_ok(&mut self, cmd: &Cmd) -> Result<Value> {
        let v = self.request(cmd)?;
        v.into_result()
            .map_err(|e| Error::new(&self.addr, Phase::Reply, Cause::Server(e)))
    }

    /// Bytes received but not consumed yet (read past the last reply).
    pub fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    /// Marks `n` buffered bytes as consumed (at most all of them).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.rbuf.len() - self.rpos);
        self.rpos += n;
        self.consumed += n as u64;
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }

    /// Total bytes consumed from this connection (replies plus raw reads).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Splits the connection into its transport and the bytes already buffered, which come
    /// before anything still to be read from the transport.
    pub fn into_parts(mut self) -> (Stream, Vec<u8>) {
        let rest = self.rbuf.split_off(self.rpos);
        (self.stream, rest)
    }

    /// Reads more bytes from the transport into the buffer; returns how many (0 = EOF).
    fn fill(&mut self) -> io::Result<usize> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let old = self.rbuf.len();
        let want = old.clamp(MIN_READ, MAX_READ);
        self.rbuf.resize(old + want, 0);
        let r = loop {
            match self.stream.read(&mut self.rbuf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = *r.as_ref().unwrap_or(&0);
        self.rbuf.truncate(old + n);
        r
    }
}

impl Read for Conn {
    /// Serves buffered bytes first, then reads the transport directly.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pending = self.buffered();
        if !pending.is_empty() {
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            self.consume(n);
            return Ok(n);
        }
        let n = self.stream.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

fn set_timeouts(tcp: &TcpStream, t: Option<Duration>) -> io::Result<()> {
    tcp.set_read_timeout(t)?;
    tcp.set_write_timeout(t)
}

/// Resolves `addr` and tries each address with `timeout`; sets `TCP_NODELAY` (commands are
/// small and latency matters) and keepalive (a silent peer behind a NAT is noticed).
fn connect_tcp(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| Error::io(addr, Phase::Resolve, e))?
        .collect();
    let mut last = None;
    for sa in &addrs {
        match TcpStream::connect_timeout(sa, timeout) {
            Ok(s) => {
                let setup = s.set_nodelay(true).and_then(|()| {
                    let ka = TcpKeepalive::new()
                        .with_time(Duration::from_secs(60))
                        .with_interval(Duration::from_secs(10))
                        .with_retries(6);
                    SockRef::from(&s).set_tcp_keepalive(&ka)
                });
                setup.map_err(|e| Error::io(addr, Phase::Connect, e))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => Error::io(addr, Phase::Connect, e),
        None => Error::new(
            addr,
            Phase::Resolve,
            Cause::Config("the name resolved to no address".into()),
        ),
    })
}
