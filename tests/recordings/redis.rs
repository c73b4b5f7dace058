//! A minimal blocking RESP2 client for the recording tests: send commands (pipelined), read
//! replies, dump a keyspace. Test-only; the product's pipelined writer lives in `src/target`.

use df2redis_sync::model::Cmd;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(b)) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    pub fn text(&self) -> String {
        self.bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
    pub fn array(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(a)) => a,
            _ => &[],
        }
    }
}

/// One connection to a Redis server.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    pub fn connect(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::with_capacity(1 << 16, s.try_clone()?),
            w: s,
        })
    }

    /// Sends one command built from string arguments and returns its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        let c = Cmd::from_args(args.iter().copied());
        self.pipeline(std::slice::from_ref(&c)).remove(0)
    }

    /// Sends every command (in batches, so neither side blocks on a full socket buffer) and
    /// returns the replies in order.
    pub fn pipeline(&mut self, cmds: &[Cmd]) -> Vec<Reply> {
        let mut out = Vec::with_capacity(cmds.len());
        for batch in cmds.chunks(512) {
            let mut buf = Vec::new();
            for c in batch {
                c.encode_resp(&mut buf);
            }
            self.w.write_all(&buf).expect("write to redis");
            for _ in batch {
                out.push(self.read_reply().expect("read redis reply"));
            }
        }
        out
    }

    fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\r\n") {
            return Err(std::io::Error::other("truncated RESP line"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let line = self.read_line()?;
        let (kind, rest) = line
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty RESP line"))?;
        let text = String::from_utf8_lossy(rest).into_owned();
        let num = || {
            text.parse::<i64>()
                .map_err(|_| std::io::Error::other(format!("bad RESP number {text:?}")))
        };
        Ok(match kind {
            b'+' => Reply::Status(text.clone()),
            b'-' => Reply::Error(text.clone()),
            b':' => Reply::Int(num()?),
            b'$' => {
                let n = num()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut b = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(b))
                }
            }
            b'*' => {
                let n = num()?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut v = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        v.push(self.read_reply()?);
                    }
                    Reply::Array(Some(v))
                }
            }
            _ => return Err(std::io::Error::other(format!("bad RESP type {kind:#x}"))),
        })
    }
}

/// A throwaway redis-server (the shared `tests/support` fixture) with a way to connect.
pub struct Server {
    inner: crate::support::RedisServer,
}

impl Server {
    pub fn start() -> Server {
        Server {
            inner: crate::support::RedisServer::start(),
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(self.inner.port()).expect("connect to redis-server")
    }
}
