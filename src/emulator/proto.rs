//! RESP for the emulator: a sans-IO request parser (RESP arrays and inline commands, as
//! Dragonfly's own replica sends them inline), a sans-IO RESP2 reply parser for the backing
//! redis-server's answers, reply encoding, and a small buffered reader over a blocking socket.
//!
//! Every length read from a peer is capped before anything is allocated for it.

use std::io::{self, Read};

/// Largest bulk string accepted from a peer (Redis's own `proto-max-bulk-len` default).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Largest number of elements in one array from a peer.
pub const MAX_ARRAY: usize = 16 * 1024 * 1024;
/// Longest inline command or header line.
const MAX_LINE: usize = 64 * 1024;
/// Most bytes one request or reply may occupy in a [`ReadBuf`] (Redis's own
/// `client-query-buffer-limit` default): the per-element caps above still allow a 16 Mi-element
/// array of 512 MiB strings, so the buffer needs a cap of its own.
pub const MAX_BUFFERED: usize = 1024 * 1024 * 1024;

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+text`
    Simple(Vec<u8>),
    /// `-text`
    Error(Vec<u8>),
    /// `:n`
    Int(i64),
    /// `$n` or `$-1` (None)
    Bulk(Option<Vec<u8>>),
    /// `*n` or `*-1` (None)
    Array(Option<Vec<Value>>),
    /// RESP3 `_` null.
    Null,
    /// RESP3 `#t` / `#f`.
    Bool(bool),
    /// RESP3 `,` double, kept as its text.
    Double(Vec<u8>),
    /// RESP3 `(` big number, kept as its text.
    BigNumber(Vec<u8>),
    /// RESP3 `=` verbatim string: the 3-letter format, `:`, then the text.
    Verbatim(Vec<u8>),
    /// RESP3 `%` map.
    Map(Vec<(Value, Value)>),
    /// RESP3 `~` set.
    Set(Vec<Value>),
    /// RESP3 `>` push.
    Push(Vec<Value>),
}

impl Value {
    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple(b"OK".to_vec())
    }

    /// An error reply; `-ERR ` is prefixed unless the text starts with an upper-case code.
    pub fn err(text: &str) -> Value {
        let first = text.split(' ').next().unwrap_or("");
        if !first.is_empty() && first.chars().all(|c| c.is_ascii_uppercase()) {
            Value::Error(text.as_bytes().to_vec())
        } else {
            Value::Error(format!("ERR {text}").into_bytes())
        }
    }

    /// A bulk string.
    pub fn bulk(b: impl Into<Vec<u8>>) -> Value {
        Value::Bulk(Some(b.into()))
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// The bytes of a simple or bulk string (RESP3 doubles, big numbers and verbatim text too).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(Some(b)) | Value::Double(b) | Value::BigNumber(b) => {
                Some(b)
            }
            Value::Verbatim(b) => b.get(4..),
            _ => None,
        }
    }

    /// An integer reply, or a string holding a decimal integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Simple(b) | Value::Bulk(Some(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The elements of a non-nil array (RESP3 sets and pushes too).
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(v)) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// The same reply for a RESP3 client: RESP2 nil bulk and nil array become `_`.
    pub fn into_resp3(self) -> Value {
        match self {
            Value::Bulk(None) | Value::Array(None) => Value::Null,
            Value::Array(Some(v)) => {
                Value::Array(Some(v.into_iter().map(Value::into_resp3).collect()))
            }
            v => v,
        }
    }

    /// Appends the RESP2 encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut ib = itoa::Buffer::new();
        match self {
            Value::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Value::Error(s) => {
                out.push(b'-');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Value::Int(i) => {
                out.push(b':');
                out.extend_from_slice(ib.format(*i).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Value::Bulk(Some(b)) => {
                out.push(b'$');
                out.extend_from_slice(ib.format(b.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(Some(v)) => {
                out.push(b'*');
                out.extend_from_slice(ib.format(v.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                for e in v {
                    e.encode(out);
                }
            }
            Value::Null => out.extend_from_slice(b"_\r\n"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::Double(t) | Value::BigNumber(t) => {
                out.push(if matches!(self, Value::Double(_)) {
                    b','
                } else {
                    b'('
                });
                out.extend_from_slice(t);
                out.extend_from_slice(b"\r\n");
            }
            Value::Verbatim(t) => {
                out.push(b'=');
                out.extend_from_slice(ib.format(t.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(t);
                out.extend_from_slice(b"\r\n");
            }
            Value::Map(m) => {
                out.push(b'%');
                out.extend_from_slice(ib.format(m.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                for (k, v) in m {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Value::Set(v) | Value::Push(v) => {
                out.push(if matches!(self, Value::Set(_)) {
                    b'~'
                } else {
                    b'>'
                });
                out.extend_from_slice(ib.format(v.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                for e in v {
                    e.encode(out);
                }
            }
        }
    }

    /// The RESP2 encoding as a fresh buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// A protocol error with the byte offset (within the parsed buffer) where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    /// Offset in the buffer given to the parser.
    pub pos: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "protocol error at byte {}: {}", self.pos, self.what)
    }
}

impl std::error::Error for ProtoError {}

/// Finds the CRLF-terminated line starting at `pos`; returns (line, position after CRLF).
fn line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, ProtoError> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    match memchr::memchr(b'\n', rest) {
        Some(i) => {
            if i > MAX_LINE {
                return Err(ProtoError {
                    pos,
                    what: "line too long",
                });
            }
            let l = &rest[..i];
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            Ok(Some((l, pos + i + 1)))
        }
        None if rest.len() > MAX_LINE => Err(ProtoError {
            pos,
            what: "line too long",
        }),
        None => Ok(None),
    }
}

fn parse_i64(b: &[u8], pos: usize) -> Result<i64, ProtoError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtoError {
            pos,
            what: "bad integer",
        })
}

/// Parses one length header value (`-1` allowed) against `cap`.
fn parse_len(b: &[u8], pos: usize, cap: usize) -> Result<Option<usize>, ProtoError> {
    let n = parse_i64(b, pos)?;
    if n < 0 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| ProtoError {
        pos,
        what: "length too large",
    })?;
    if n > cap {
        return Err(ProtoError {
            pos,
            what: "length over the cap",
        });
    }
    Ok(Some(n))
}

/// A parsed request: its arguments and the bytes it used.
pub type Request = (Vec<Vec<u8>>, usize);

/// Parses one client request at the start of `buf`: a RESP array of bulk strings, or an
/// inline command (space-separated words). Returns the arguments and the bytes consumed, or
/// `None` when more bytes are needed. Empty inline lines yield an empty argument list.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, ProtoError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        let Some((l, next)) = line(buf, 0)? else {
            return Ok(None);
        };
        let args = l
            .split(|c| *c == b' ' || *c == b'\t')
            .filter(|w| !w.is_empty())
            .map(|w| w.to_vec())
            .collect();
        return Ok(Some((args, next)));
    }
    let Some((hdr, mut pos)) = line(buf, 0)? else {
        return Ok(None);
    };
    let n = parse_len(&hdr[1..], 1, MAX_ARRAY)?.unwrap_or(0);
    let mut args = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let Some((h, after)) = line(buf, pos)? else {
            return Ok(None);
        };
        if h.first() != Some(&b'$') {
            return Err(ProtoError {
                pos,
                what: "expected a bulk string",
            });
        }
        let len = parse_len(&h[1..], pos + 1, MAX_BULK)?.ok_or(ProtoError {
            pos,
            what: "nil bulk in a request",
        })?;
        let end = after + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtoError {
                pos: end,
                what: "bulk string not followed by CRLF",
            });
        }
        args.push(buf[after..end].to_vec());
        pos = end + 2;
    }
    Ok(Some((args, pos)))
}

/// Parses one RESP2 reply at the start of `buf`; `None` when more bytes are needed.
pub fn parse_value(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtoError> {
    parse_value_at(buf, 0, 0)
}

fn parse_value_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
) -> Result<Option<(Value, usize)>, ProtoError> {
    if depth > 64 {
        return Err(ProtoError {
            pos,
            what: "nesting too deep",
        });
    }
    let Some((l, after)) = line(buf, pos)? else {
        return Ok(None);
    };
    let Some((&t, rest)) = l.split_first() else {
        return Err(ProtoError {
            pos,
            what: "empty reply line",
        });
    };
    match t {
        b'+' => Ok(Some((Value::Simple(rest.to_vec()), after))),
        b'-' => Ok(Some((Value::Error(rest.to_vec()), after))),
        b':' => Ok(Some((Value::Int(parse_i64(rest, pos + 1)?), after))),
        b'$' => match parse_len(rest, pos + 1, MAX_BULK)? {
            None => Ok(Some((Value::Bulk(None), after))),
            Some(len) => {
                let end = after + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                Ok(Some((Value::Bulk(Some(buf[after..end].to_vec())), end + 2)))
            }
        },
        b'*' => match parse_len(rest, pos + 1, MAX_ARRAY)? {
            None => Ok(Some((Value::Array(None), after))),
            Some(n) => {
                let mut v = Vec::with_capacity(n.min(1024));
                let mut p = after;
                for _ in 0..n {
                    match parse_value_at(buf, p, depth + 1)? {
                        Some((e, np)) => {
                            v.push(e);
                            p = np;
                        }
                        None => return Ok(None),
                    }
                }
                Ok(Some((Value::Array(Some(v)), p)))
            }
        },
        b'_' => Ok(Some((Value::Null, after))),
        b'#' => Ok(Some((Value::Bool(rest == b"t"), after))),
        b',' => Ok(Some((Value::Double(rest.to_vec()), after))),
        b'(' => Ok(Some((Value::BigNumber(rest.to_vec()), after))),
        b'=' | b'!' => {
            let len = parse_len(rest, pos + 1, MAX_BULK)?.unwrap_or(0);
            let end = after + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            let body = buf[after..end].to_vec();
            Ok(Some((
                if t == b'=' {
                    Value::Verbatim(body)
                } else {
                    Value::Error(body)
                },
                end + 2,
            )))
        }
        b'%' | b'~' | b'>' | b'|' => {
            let n = parse_len(rest, pos + 1, MAX_ARRAY)?.unwrap_or(0);
            let per = if matches!(t, b'%' | b'|') { 2 } else { 1 };
            let mut items = Vec::with_capacity((n * per).min(1024));
            let mut p = after;
            for _ in 0..n * per {
                match parse_value_at(buf, p, depth + 1)? {
                    Some((e, np)) => {
                        items.push(e);
                        p = np;
                    }
                    None => return Ok(None),
                }
            }
            match t {
                b'%' => {
                    let mut m = Vec::with_capacity(n);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        m.push((k, v));
                    }
                    Ok(Some((Value::Map(m), p)))
                }
                b'~' => Ok(Some((Value::Set(items), p))),
                b'>' => Ok(Some((Value::Push(items), p))),
                // An attribute annotates the value that follows it: drop it, return that value.
                _ => match parse_value_at(buf, p, depth + 1)? {
                    Some((v, np)) => Ok(Some((v, np))),
                    None => Ok(None),
                },
            }
        }
        _ => Err(ProtoError {
            pos,
            what: "unknown reply type byte",
        }),
    }
}

/// A refillable read buffer over a blocking reader: unread bytes are moved to the front
/// before each refill, and the buffer only grows for an element that does not fit.
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Largest size the buffer may grow to ([`MAX_BUFFERED`] unless set for a test).
    limit: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf::with_limit(MAX_BUFFERED)
    }
}

impl ReadBuf {
    /// A buffer that refuses to grow past `limit` bytes (at least its initial 64 KiB).
    pub fn with_limit(limit: usize) -> ReadBuf {
        ReadBuf {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            limit,
        }
    }

    /// The bytes read but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` pending bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Reads more bytes; returns 0 at EOF. A request or reply that would need a buffer larger
    /// than the limit is an `InvalidData` error naming its size so far.
    pub fn fill<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= self.limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "protocol error: one request or reply is larger than {} bytes \
                         ({} bytes buffered and still incomplete)",
                        self.limit, self.end
                    ),
                ));
            }
            let new = (self.buf.len() * 2).min(self.limit.max(self.buf.len()));
            self.buf.resize(new, 0);
        }
        loop {
            match r.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one client request; `Ok(None)` at a clean EOF between requests.
    pub fn read_request<R: Read>(&mut self, r: &mut R) -> io::Result<Option<Vec<Vec<u8>>>> {
        loop {
            match parse_request(self.pending()) {
                Ok(Some((args, n))) => {
                    self.consume(n);
                    return Ok(Some(args));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if self.fill(r)? == 0 {
                return if self.pending().is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Reads one reply value; EOF is an error.
    pub fn read_value<R: Read>(&mut self, r: &mut R) -> io::Result<Value> {
        loop {
            match parse_value(self.pending()) {
                Ok(Some((v, n))) => {
                    self.consume(n);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if self.fill(r)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_resp_and_inline_in_tiny_chunks() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\nREPLCONF ACK 17\r\n";
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for &b in input.iter() {
            buf.push(b);
            while let Some((args, n)) = parse_request(&buf).unwrap() {
                got.push(args);
                buf.drain(..n);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], vec![b"SET".to_vec(), b"k".to_vec(), b"".to_vec()]);
        assert_eq!(got[1], vec![b"PING".to_vec()]);
        assert_eq!(
            got[2],
            vec![b"REPLCONF".to_vec(), b"ACK".to_vec(), b"17".to_vec()]
        );
    }

    /// A peer that never finishes its request (a 16 Mi-element array of small strings, each
    /// within the caps) gets an error once the buffer reached its limit, instead of a buffer
    /// that grows until memory runs out; a request that fits is read whole.
    #[test]
    fn endless_request_stops_at_the_buffer_limit() {
        /// `*16777216\r\n` then `$1\r\na\r\n` forever; the field is the bytes given so far.
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let (head, unit) = (b"*16777216\r\n", b"$1\r\na\r\n");
                for o in out.iter_mut() {
                    *o = match self.0.checked_sub(head.len()) {
                        None => head[self.0],
                        Some(i) => unit[i % unit.len()],
                    };
                    self.0 += 1;
                }
                Ok(out.len())
            }
        }
        let mut rb = ReadBuf::with_limit(256 * 1024);
        let e = rb.read_request(&mut Endless(0)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string()
                .contains("one request or reply is larger than 262144 bytes"),
            "{e}"
        );
        // 20 000 arguments (140 KiB) fit under the same limit.
        let mut req = b"*20000\r\n".to_vec();
        for _ in 0..20_000 {
            req.extend_from_slice(b"$1\r\na\r\n");
        }
        let mut rb = ReadBuf::with_limit(256 * 1024);
        let args = rb.read_request(&mut &req[..]).unwrap().unwrap();
        assert_eq!(args.len(), 20_000);
    }

    #[test]
    fn request_caps_and_errors() {
        assert!(parse_request(b"*1\r\n$999999999999\r\n").is_err());
        assert!(parse_request(b"*1\r\n+x\r\n").is_err());
        assert!(parse_request(b"*1\r\n$1\r\nab\r\n").is_err());
    }

    #[test]
    fn value_round_trip() {
        let v = Value::Array(Some(vec![
            Value::Simple(b"OK".to_vec()),
            Value::Int(-3),
            Value::Bulk(None),
            Value::bulk(b"x\r\ny".to_vec()),
            Value::Array(None),
            Value::Error(b"ERR no".to_vec()),
        ]));
        let b = v.to_bytes();
        for cut in 0..b.len() {
            assert_eq!(parse_value(&b[..cut]).unwrap(), None);
        }
        assert_eq!(parse_value(&b).unwrap(), Some((v, b.len())));
    }

    #[test]
    fn resp3_round_trip_in_tiny_chunks() {
        let v = Value::Map(vec![
            (Value::bulk(b"a".to_vec()), Value::Double(b"1.5".to_vec())),
            (
                Value::Simple(b"b".to_vec()),
                Value::Set(vec![Value::Int(1), Value::Null, Value::Bool(true)]),
            ),
            (
                Value::bulk(b"c".to_vec()),
                Value::Verbatim(b"txt:hello".to_vec()),
            ),
            (
                Value::bulk(b"d".to_vec()),
                Value::Push(vec![Value::BigNumber(
                    b"123456789012345678901234567890".to_vec(),
                )]),
            ),
        ]);
        let b = v.to_bytes();
        for cut in 0..b.len() {
            assert_eq!(parse_value(&b[..cut]).unwrap(), None);
        }
        assert_eq!(parse_value(&b).unwrap(), Some((v, b.len())));
        assert_eq!(
            parse_value(b"|1\r\n+k\r\n+v\r\n:5\r\n").unwrap(),
            Some((Value::Int(5), 16))
        );
        assert_eq!(
            Value::Array(Some(vec![Value::Bulk(None)])).into_resp3(),
            Value::Array(Some(vec![Value::Null]))
        );
    }

    #[test]
    fn err_prefix() {
        assert_eq!(
            Value::err("syntax error").to_bytes(),
            b"-ERR syntax error\r\n"
        );
        assert_eq!(
            Value::err("NOAUTH Authentication required.").to_bytes(),
            b"-NOAUTH Authentication required.\r\n"
        );
    }
}
