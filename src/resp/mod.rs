//! RESP replies: the [`Value`] tree (RESP2 and RESP3 types), an incremental sans-IO reply
//! decoder with caps ([`decode`], [`Limits`]), an encoder ([`Value::encode`], used by the
//! emulator and by tests), and server errors sorted by what the caller should do next
//! ([`ServerError`], [`ErrorKind`], [`NextAction`]).
//!
//! Requests are encoded by [`crate::model::Cmd`]; this module only reads replies (and writes
//! them for the emulator). Nothing here does I/O, spawns threads or logs.

mod decode;
mod error;

pub use decode::{decode, DecodeError, DecodeErrorKind, Limits};
pub use error::{ErrorKind, NextAction, ServerError};

use std::fmt;

/// One RESP reply.
///
/// RESP2 replies use only `Simple`, `Error`, `Int`, `Bulk`, `Nil` and `Array`; the rest exist
/// only when a connection switched to RESP3 with `HELLO 3`.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// `+OK`: a simple string (no CR or LF inside).
    Simple(Vec<u8>),
    /// `-ERR ...`: a simple error line, without the leading `-`. See [`Value::server_error`].
    Error(Vec<u8>),
    /// `:42`: a signed 64-bit integer.
    Int(i64),
    /// `$3\r\nfoo`: a binary-safe bulk string.
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` (RESP2) or `_` (RESP3): no value.
    Nil,
    /// `*N`: an array.
    Array(Vec<Value>),
    /// `,1.5` (RESP3): a double; `inf`, `-inf` and `nan` included.
    Double(f64),
    /// `#t` / `#f` (RESP3).
    Boolean(bool),
    /// `(123...` (RESP3): an integer too big for 64 bits, kept as its decimal text.
    BigNumber(Vec<u8>),
    /// `!N` (RESP3): a binary-safe error.
    BulkError(Vec<u8>),
    /// `=N\r\ntxt:...` (RESP3): a string with a three-byte format tag (`txt`, `mkd`).
    Verbatim {
        /// The format tag, e.g. `txt`.
        format: [u8; 3],
        /// The text after `fmt:`.
        text: Vec<u8>,
    },
    /// `%N` (RESP3): key/value pairs, in wire order.
    Map(Vec<(Value, Value)>),
    /// `~N` (RESP3): an unordered collection, in wire order.
    Set(Vec<Value>),
    /// `|N` (RESP3): attributes, followed on the wire by the reply they describe.
    Attribute {
        /// The attribute pairs.
        attrs: Vec<(Value, Value)>,
        /// The reply the attributes belong to.
        value: Box<Value>,
    },
    /// `>N` (RESP3): an out-of-band push message (pub/sub, invalidation).
    Push(Vec<Value>),
}

impl Value {
    /// The classified server error when this reply is an error (`-...` or `!...`).
    pub fn server_error(&self) -> Option<ServerError> {
        match self {
            Value::Error(m) | Value::BulkError(m) => Some(ServerError::parse(m)),
            _ => None,
        }
    }

    /// True for `-...` and `!...` replies.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_) | Value::BulkError(_))
    }

    /// `Err` with the classified error when the reply is an error, else the reply itself.
    pub fn into_result(self) -> Result<Value, ServerError> {
        match self.server_error() {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// The bytes of a string-like reply (simple, bulk, verbatim text, big number).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) | Value::BigNumber(b) => Some(b),
            Value::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The reply as UTF-8 text, if it is string-like and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The integer of `:N`, or of a string reply holding a decimal integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => self.as_str().and_then(|s| s.parse().ok()),
        }
    }

    /// True for `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Value::Simple(s) if s == b"OK")
    }

    /// The elements of an array, set or push reply.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// Key/value pairs of a RESP3 map, or of a RESP2 array that lists `k1 v1 k2 v2 ...`
    /// (how RESP2 servers send maps). `None` for anything else or an odd-length array.
    pub fn to_pairs(&self) -> Option<Vec<(&Value, &Value)>> {
        match self {
            Value::Map(m) => Some(m.iter().map(|(k, v)| (k, v)).collect()),
            Value::Array(a) if a.len() % 2 == 0 => {
                Some(a.chunks_exact(2).map(|p| (&p[0], &p[1])).collect())
            }
            _ => None,
        }
    }

    /// Appends the RESP encoding of this value to `out` (RESP3 types in RESP3 syntax; `Nil` as
    /// the RESP2 `$-1`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(s) => line(out, b'+', s),
            Value::Error(s) => line(out, b'-', s),
            Value::Int(n) => line(out, b':', itoa::Buffer::new().format(*n).as_bytes()),
            Value::Bulk(b) => blob(out, b'$', b),
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(v) => seq(out, b'*', v),
            Value::Double(d) => {
                let text = if d.is_nan() {
                    "nan".to_string()
                } else if d.is_infinite() {
                    if *d > 0.0 { "inf" } else { "-inf" }.to_string()
                } else {
                    // Rust's `Display` for f64 is the shortest text that parses back exactly.
                    format!("{d}")
                };
                line(out, b',', text.as_bytes());
            }
            Value::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::BigNumber(b) => line(out, b'(', b),
            Value::BulkError(b) => blob(out, b'!', b),
            Value::Verbatim { format, text } => {
                header(out, b'=', format.len() + 1 + text.len());
                out.extend_from_slice(format);
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            Value::Map(m) => {
                header(out, b'%', m.len());
                for (k, v) in m {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Value::Set(v) => seq(out, b'~', v),
            Value::Attribute { attrs, value } => {
                header(out, b'|', attrs.len());
                for (k, v) in attrs {
                    k.encode(out);
                    v.encode(out);
                }
                value.encode(out);
            }
            Value::Push(v) => seq(out, b'>', v),
        }
    }

    /// The RESP encoding as a fresh buffer.
    pub fn to_resp(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

fn line(out: &mut Vec<u8>, tag: u8, s: &[u8]) {
    out.push(tag);
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, tag: u8, n: usize) {
    line(out, tag, itoa::Buffer::new().format(n).as_bytes());
}

fn blob(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    header(out, tag, b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn seq(out: &mut Vec<u8>, tag: u8, v: &[Value]) {
    header(out, tag, v.len());
    for e in v {
        e.encode(out);
    }
}

impl fmt::Debug for Value {
    /// Compact, escaped, `redis-cli`-like rendering for logs and test failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::model::escape_bytes as esc;
        match self {
            Value::Simple(s) => write!(f, "+{}", esc(s)),
            Value::Error(s) => write!(f, "-{}", esc(s)),
            Value::Int(n) => write!(f, ":{n}"),
            Value::Bulk(b) => write!(f, "${}", esc(b)),
            Value::Nil => f.write_str("nil"),
            Value::Array(v) => write!(f, "*{v:?}"),
            Value::Double(d) => write!(f, ",{d}"),
            Value::Boolean(b) => write!(f, "#{b}"),
            Value::BigNumber(b) => write!(f, "({}", esc(b)),
            Value::BulkError(b) => write!(f, "!{}", esc(b)),
            Value::Verbatim { format, text } => write!(f, "={}:{}", esc(format), esc(text)),
            Value::Map(m) => {
                f.write_str("%{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}: {v:?}")?;
                }
                f.write_str("}")
            }
            Value::Set(v) => write!(f, "~{v:?}"),
            Value::Attribute { attrs, value } => write!(f, "|{attrs:?} {value:?}"),
            Value::Push(v) => write!(f, ">{v:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_examples() {
        let v = Value::Array(vec![
            Value::Simple(b"OK".to_vec()),
            Value::Int(-3),
            Value::Bulk(b"a\r\nb".to_vec()),
            Value::Nil,
        ]);
        assert_eq!(v.to_resp(), b"*4\r\n+OK\r\n:-3\r\n$4\r\na\r\nb\r\n$-1\r\n");
        let d = Value::Double(f64::NEG_INFINITY);
        assert_eq!(d.to_resp(), b",-inf\r\n");
        let vb = Value::Verbatim {
            format: *b"txt",
            text: b"hi".to_vec(),
        };
        assert_eq!(vb.to_resp(), b"=6\r\ntxt:hi\r\n");
    }

    #[test]
    fn pairs_from_resp2_and_resp3() {
        let a = Value::Array(vec![Value::Bulk(b"k".to_vec()), Value::Int(1)]);
        let m = Value::Map(vec![(Value::Bulk(b"k".to_vec()), Value::Int(1))]);
        assert_eq!(a.to_pairs(), m.to_pairs());
        assert!(Value::Array(vec![Value::Nil]).to_pairs().is_none());
    }
}
