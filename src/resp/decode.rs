//! The incremental RESP reply decoder: bytes in, `(Value, consumed)` or "need more" out.
//!
//! Sans-IO in the style of `csv-core`: the caller owns the buffer and calls [`decode`] again
//! with more bytes when it returned `Ok(None)`. Nothing is allocated for a length the peer
//! announced until the bytes behind it have arrived, and every length is checked against
//! [`Limits`] first, so a hostile or broken server cannot make us allocate or recurse without
//! bound.

use std::fmt;

use super::Value;

/// Caps applied to every reply. Defaults follow Redis's own server-side limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (`$`, `!`, `=`) accepted, in bytes. Default 512 MiB
    /// (Redis `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Largest element count of one aggregate (`*`, `%`, `~`, `|`, `>`). Default 16 Mi.
    pub max_array_len: usize,
    /// Deepest nesting of aggregates. Default 64.
    pub max_depth: usize,
    /// Longest line (simple string, error, number) without its CRLF. Default 1 MiB.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_len: 512 << 20,
            max_array_len: 16 << 20,
            max_depth: 64,
            max_line_len: 1 << 20,
        }
    }
}

/// What went wrong in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The type byte is not a RESP2/RESP3 type.
    UnknownType(u8),
    /// A CR not followed by LF, or a bulk payload not followed by CRLF.
    MissingCrlf,
    /// A line longer than [`Limits::max_line_len`].
    LineTooLong {
        /// The cap.
        max: usize,
    },
    /// A length or integer that is not a valid decimal number.
    BadNumber,
    /// A negative length other than `-1`.
    BadLength(i64),
    /// A bulk length over [`Limits::max_bulk_len`].
    BulkTooLong {
        /// Announced length.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// An aggregate length over [`Limits::max_array_len`].
    ArrayTooLong {
        /// Announced element count.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// Aggregates nested deeper than [`Limits::max_depth`].
    TooDeep {
        /// The cap.
        max: usize,
    },
    /// A `,` double that does not parse.
    BadDouble,
    /// A `#` boolean other than `t` / `f`.
    BadBoolean,
    /// A `=` verbatim string without its `xxx:` prefix.
    BadVerbatim,
    /// RESP3 streamed strings/aggregates (`$?`, `*?`), which Redis never sends as replies.
    StreamedNotSupported,
}

/// A malformed reply: what and at which byte of the buffer given to [`decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset of the offending byte (the start of the line or type byte involved).
    pub pos: usize,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RESP decode error at byte {}: ", self.pos)?;
        match &self.kind {
            DecodeErrorKind::UnknownType(b) => write!(f, "unknown type byte 0x{b:02x}"),
            DecodeErrorKind::MissingCrlf => f.write_str("expected CRLF"),
            DecodeErrorKind::LineTooLong { max } => write!(f, "line longer than {max} bytes"),
            DecodeErrorKind::BadNumber => f.write_str("invalid decimal number"),
            DecodeErrorKind::BadLength(n) => write!(f, "invalid length {n}"),
            DecodeErrorKind::BulkTooLong { len, max } => {
                write!(f, "bulk length {len} over the limit of {max}")
            }
            DecodeErrorKind::ArrayTooLong { len, max } => {
                write!(f, "aggregate length {len} over the limit of {max}")
            }
            DecodeErrorKind::TooDeep { max } => write!(f, "nested deeper than {max}"),
            DecodeErrorKind::BadDouble => f.write_str("invalid double"),
            DecodeErrorKind::BadBoolean => f.write_str("invalid boolean"),
            DecodeErrorKind::BadVerbatim => f.write_str("verbatim string without format prefix"),
            DecodeErrorKind::StreamedNotSupported => {
                f.write_str("streamed RESP3 strings/aggregates are not supported")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one reply from the front of `buf`.
///
/// Returns `Ok(Some((value, consumed)))` when a whole reply is there, `Ok(None)` when `buf`
/// holds only a prefix of one (call again with more bytes), and `Err` when the bytes cannot be
/// RESP (positions are offsets into `buf`).
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, DecodeError> {
    let mut p = Parser {
        buf,
        pos: 0,
        limits,
    };
    Ok(p.value(0)?.map(|v| (v, p.pos)))
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

type Step<T> = Result<Option<T>, DecodeError>;

/// `?` for "need more": returns `Ok(None)` from the enclosing function.
macro_rules! need {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

impl Parser<'_> {
    fn err<T>(&self, pos: usize, kind: DecodeErrorKind) -> Result<T, DecodeError> {
        Err(DecodeError { pos, kind })
    }

    /// The bytes up to the next CRLF, consuming the CRLF.
    fn line(&mut self) -> Step<&[u8]> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or(&[]);
        let max = self.limits.max_line_len;
        match memchr::memchr(b'\r', rest) {
            Some(i) if i > max => self.err(start, DecodeErrorKind::LineTooLong { max }),
            Some(i) => match rest.get(i + 1) {
                None => Ok(None),
                Some(b'\n') => {
                    self.pos = start + i + 2;
                    Ok(Some(&rest[..i]))
                }
                Some(_) => self.err(start + i, DecodeErrorKind::MissingCrlf),
            },
            None if rest.len() > max => self.err(start, DecodeErrorKind::LineTooLong { max }),
            None => Ok(None),
        }
    }

    fn int_line(&mut self) -> Step<(i64, usize)> {
        let at = self.pos;
        let l = need!(self.line());
        match parse_i64(l) {
            Some(n) => Ok(Some((n, at))),
            None if l == b"?" => self.err(at, DecodeErrorKind::StreamedNotSupported),
            None => self.err(at, DecodeErrorKind::BadNumber),
        }
    }

    /// A length line: `Some(None)` for `-1` (nil), `Some(Some(n))` otherwise.
    fn len_line(&mut self) -> Step<Option<(u64, usize)>> {
        let (n, at) = need!(self.int_line());
        match n {
            -1 => Ok(Some(None)),
            n if n < 0 => self.err(at, DecodeErrorKind::BadLength(n)),
            n => Ok(Some(Some((n as u64, at)))),
        }
    }

    /// Payload of a bulk-like type after its length line; `None` inside = nil.
    fn blob(&mut self) -> Step<Option<Vec<u8>>> {
        let Some((len, at)) = need!(self.len_line()) else {
            return Ok(Some(None));
        };
        let max = self.limits.max_bulk_len;
        if len > max as u64 {
            return self.err(at, DecodeErrorKind::BulkTooLong { len, max });
        }
        let len = len as usize;
        let start = self.pos;
        // `len <= max_bulk_len` keeps this addition far from overflow.
        let end = start + len;
        if self.buf.len() < end + 2 {
            return Ok(None);
        }
        if &self.buf[end..end + 2] != b"\r\n" {
            return self.err(end, DecodeErrorKind::MissingCrlf);
        }
        self.pos = end + 2;
        Ok(Some(Some(self.buf[start..end].to_vec())))
    }

    /// Element count of an aggregate, checked against the cap and against the bytes present:
    /// every element takes at least 3 bytes (`_\r\n`), so a count the buffer cannot hold yet is
    /// "need more" before anything is allocated.
    fn count(&mut self, per_element: usize) -> Step<Option<usize>> {
        let Some((len, at)) = need!(self.len_line()) else {
            return Ok(Some(None));
        };
        let max = self.limits.max_array_len;
        if len > max as u64 {
            return self.err(at, DecodeErrorKind::ArrayTooLong { len, max });
        }
        let len = len as usize;
        let left = self.buf.len() - self.pos;
        if len.saturating_mul(3 * per_element) > left {
            return Ok(None);
        }
        Ok(Some(Some(len)))
    }

    fn values(&mut self, n: usize, depth: usize) -> Step<Vec<Value>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(need!(self.value(depth + 1)));
        }
        Ok(Some(v))
    }

    fn pairs(&mut self, n: usize, depth: usize) -> Step<Vec<(Value, Value)>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let k = need!(self.value(depth + 1));
            let val = need!(self.value(depth + 1));
            v.push((k, val));
        }
        Ok(Some(v))
    }

    fn value(&mut self, depth: usize) -> Step<Value> {
        let at = self.pos;
        let Some(&tag) = self.buf.get(at) else {
            return Ok(None);
        };
        if depth > self.limits.max_depth {
            let max = self.limits.max_depth;
            return self.err(at, DecodeErrorKind::TooDeep { max });
        }
        self.pos += 1;
        let v = match tag {
            b'+' => Value::Simple(need!(self.line()).to_vec()),
            b'-' => Value::Error(need!(self.line()).to_vec()),
            b':' => Value::Int(need!(self.int_line()).0),
            b'$' => match need!(self.blob()) {
                Some(b) => Value::Bulk(b),
                None => Value::Nil,
            },
            b'*' => match need!(self.count(1)) {
                Some(n) => Value::Array(need!(self.values(n, depth))),
                None => Value::Nil,
            },
            b'_' => {
                let l = need!(self.line());
                if !l.is_empty() {
                    return self.err(at + 1, DecodeErrorKind::MissingCrlf);
                }
                Value::Nil
            }
            b',' => {
                let l = need!(self.line());
                match std::str::from_utf8(l).ok().and_then(parse_double) {
                    Some(d) => Value::Double(d),
                    None => return self.err(at + 1, DecodeErrorKind::BadDouble),
                }
            }
            b'#' => match need!(self.line()) {
                b"t" => Value::Boolean(true),
                b"f" => Value::Boolean(false),
                _ => return self.err(at + 1, DecodeErrorKind::BadBoolean),
            },
            b'(' => {
                let l = need!(self.line());
                let digits = l.strip_prefix(b"-").unwrap_or(l);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return self.err(at + 1, DecodeErrorKind::BadNumber);
                }
                Value::BigNumber(l.to_vec())
            }
            b'!' => match need!(self.blob()) {
                Some(b) => Value::BulkError(b),
                None => return self.err(at + 1, DecodeErrorKind::BadLength(-1)),
            },
            b'=' => match need!(self.blob()) {
                Some(b) if b.len() >= 4 && b[3] == b':' => Value::Verbatim {
                    format: [b[0], b[1], b[2]],
                    text: b[4..].to_vec(),
                },
                _ => return self.err(at + 1, DecodeErrorKind::BadVerbatim),
            },
            b'%' => match need!(self.count(2)) {
                Some(n) => Value::Map(need!(self.pairs(n, depth))),
                None => return self.err(at + 1, DecodeErrorKind::BadLength(-1)),
            },
            b'~' => match need!(self.count(1)) {
                Some(n) => Value::Set(need!(self.values(n, depth))),
                None => return self.err(at + 1, DecodeErrorKind::BadLength(-1)),
            },
            b'>' => match need!(self.count(1)) {
                Some(n) => Value::Push(need!(self.values(n, depth))),
                None => return self.err(at + 1, DecodeErrorKind::BadLength(-1)),
            },
            b'|' => match need!(self.count(2)) {
                Some(n) => {
                    let attrs = need!(self.pairs(n, depth));
                    let value = Box::new(need!(self.value(depth + 1)));
                    Value::Attribute { attrs, value }
                }
                None => return self.err(at + 1, DecodeErrorKind::BadLength(-1)),
            },
            other => return self.err(at, DecodeErrorKind::UnknownType(other)),
        };
        Ok(Some(v))
    }
}

/// Strict decimal `i64`: optional `-`, at least one digit, nothing else, no overflow.
fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, b),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = i64::from(c - b'0');
        // Accumulate negatively so that i64::MIN parses.
        n = n.checked_mul(10)?.checked_sub(d)?;
    }
    if neg {
        Some(n)
    } else {
        n.checked_neg()
    }
}

/// RESP3 double: decimal/exponent text, `inf`, `-inf`, `nan` (any case).
fn parse_double(s: &str) -> Option<f64> {
    if s.is_empty() || s.starts_with('+') {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(b: &[u8]) -> Result<Option<(Value, usize)>, DecodeError> {
        decode(b, &Limits::default())
    }

    #[test]
    fn simple_types() {
        assert_eq!(
            dec(b"+OK\r\nrest").unwrap(),
            Some((Value::Simple(b"OK".to_vec()), 5))
        );
        assert_eq!(dec(b":-42\r\n").unwrap(), Some((Value::Int(-42), 6)));
        assert_eq!(dec(b"$-1\r\n").unwrap(), Some((Value::Nil, 5)));
        assert_eq!(dec(b"*-1\r\n").unwrap(), Some((Value::Nil, 5)));
        assert_eq!(dec(b"$0\r\n\r\n").unwrap(), Some((Value::Bulk(vec![]), 6)));
        assert_eq!(dec(b"#t\r\n").unwrap(), Some((Value::Boolean(true), 4)));
        assert_eq!(dec(b",-inf\r\n").unwrap().unwrap().1, 7);
        assert_eq!(
            dec(b":-9223372036854775808\r\n").unwrap().unwrap().0,
            Value::Int(i64::MIN)
        );
    }

    #[test]
    fn need_more() {
        for b in [
            &b""[..],
            b"+O",
            b"+OK\r",
            b"$3\r\nfo",
            b"$3\r\nfoo\r",
            b"*2\r\n:1\r\n",
            b"*1000\r\n",
        ] {
            assert_eq!(dec(b).unwrap(), None, "{:?}", crate::model::escape_bytes(b));
        }
    }

    #[test]
    fn errors_have_positions() {
        let e = dec(b"*1\r\n?x\r\n").unwrap_err();
        assert_eq!(e.pos, 4);
        assert_eq!(e.kind, DecodeErrorKind::UnknownType(b'?'));
        assert_eq!(
            e.to_string(),
            "RESP decode error at byte 4: unknown type byte 0x3f"
        );
        let e = dec(b"$3\r\nfooXY").unwrap_err();
        assert_eq!((e.pos, e.kind), (7, DecodeErrorKind::MissingCrlf));
        let e = dec(b":12a\r\n").unwrap_err();
        assert_eq!((e.pos, e.kind), (1, DecodeErrorKind::BadNumber));
        let e = dec(b"$-2\r\n").unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::BadLength(-2));
        let e = dec(b":99999999999999999999\r\n").unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::BadNumber);
    }

    #[test]
    fn caps() {
        let lim = Limits {
            max_bulk_len: 10,
            max_array_len: 3,
            max_depth: 2,
            max_line_len: 8,
        };
        let e = decode(b"$11\r\n", &lim).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::BulkTooLong { len: 11, max: 10 });
        let e = decode(b"*4\r\n", &lim).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::ArrayTooLong { len: 4, max: 3 });
        let e = decode(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", &lim).unwrap_err();
        assert_eq!((e.pos, e.kind), (12, DecodeErrorKind::TooDeep { max: 2 }));
        let e = decode(b"+123456789", &lim).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::LineTooLong { max: 8 });
        // A huge announced length is refused before any allocation.
        let e = dec(b"$99999999999\r\n").unwrap_err();
        assert!(matches!(e.kind, DecodeErrorKind::BulkTooLong { .. }));
    }

    #[test]
    fn resp3_aggregates() {
        let b = b"|1\r\n+ttl\r\n:3\r\n%1\r\n+k\r\n~2\r\n#f\r\n_\r\n";
        let (v, n) = dec(b).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(
            v,
            Value::Attribute {
                attrs: vec![(Value::Simple(b"ttl".to_vec()), Value::Int(3))],
                value: Box::new(Value::Map(vec![(
                    Value::Simple(b"k".to_vec()),
                    Value::Set(vec![Value::Boolean(false), Value::Nil])
                )])),
            }
        );
        let (v, _) = dec(b"=8\r\ntxt:abcd\r\n").unwrap().unwrap();
        assert_eq!(
            v,
            Value::Verbatim {
                format: *b"txt",
                text: b"abcd".to_vec()
            }
        );
    }
}
