//! Owned, `Send` data that crosses threads: a flat Redis command ([`Cmd`]), and the newtypes
//! that name a flow, a journal position and a database.
//!
//! Nothing here does I/O. A [`Cmd`] keeps every argument in one byte buffer plus end offsets, so
//! a command costs two allocations whatever its arity, and its RESP encoding size is known
//! exactly before anything is written.

use std::fmt;

/// Index of a Dragonfly flow (= master shard), `0..flow_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FlowId(pub u32);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow {}", self.0)
    }
}

/// A journal log sequence number, as Dragonfly counts them per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

/// A logical database index (`SELECT n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DbIndex(pub u32);

impl fmt::Display for DbIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "db {}", self.0)
    }
}

/// One Redis command, stored flat: all argument bytes back to back in `data`, and the end
/// offset of each argument in `ends`.
///
/// Invariant: `ends` is non-decreasing and its last element (if any) equals `data.len()`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Cmd {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Cmd {
    /// A command whose first argument (the name) is `name`.
    pub fn new(name: &str) -> Cmd {
        let mut c = Cmd::default();
        c.arg(name.as_bytes());
        c
    }

    /// A command with room reserved for `args` arguments totalling `bytes` bytes.
    pub fn with_capacity(args: usize, bytes: usize) -> Cmd {
        Cmd {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(args),
        }
    }

    /// Builds a command from a list of arguments (the first one is the name).
    pub fn from_args<I, A>(args: I) -> Cmd
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let mut c = Cmd::default();
        for a in args {
            c.arg(a.as_ref());
        }
        c
    }

    /// Appends one argument.
    pub fn arg(&mut self, a: &[u8]) -> &mut Cmd {
        self.data.extend_from_slice(a);
        self.ends.push(self.data.len());
        self
    }

    /// Appends an integer argument, formatted in decimal without allocating.
    pub fn arg_int<I: itoa::Integer>(&mut self, n: I) -> &mut Cmd {
        let mut buf = itoa::Buffer::new();
        self.arg(buf.format(n).as_bytes())
    }

    /// Number of arguments, the name included.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the command has no argument at all.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Argument `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    /// The command name (first argument), or an empty slice for an empty command.
    pub fn name(&self) -> &[u8] {
        self.get(0).unwrap_or(&[])
    }

    /// Iterates over the arguments.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).map(move |i| self.get(i).unwrap_or(&[]))
    }

    /// Total bytes of argument payload (not counting RESP framing).
    pub fn payload_len(&self) -> usize {
        self.data.len()
    }

    /// Exact number of bytes [`Cmd::encode_resp`] appends.
    pub fn resp_len(&self) -> usize {
        let mut n = 1 + decimal_len(self.ends.len()) + 2;
        let mut start = 0;
        for &end in &self.ends {
            let l = end - start;
            n += 1 + decimal_len(l) + 2 + l + 2;
            start = end;
        }
        n
    }

    /// Appends the command as a RESP array of bulk strings to `out`, reserving the exact size
    /// once.
    pub fn encode_resp(&self, out: &mut Vec<u8>) {
        out.reserve(self.resp_len());
        let mut ibuf = itoa::Buffer::new();
        out.push(b'*');
        out.extend_from_slice(ibuf.format(self.ends.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut start = 0;
        for &end in &self.ends {
            out.push(b'$');
            out.extend_from_slice(ibuf.format(end - start).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.data[start..end]);
            out.extend_from_slice(b"\r\n");
            start = end;
        }
    }

    /// The RESP encoding as a fresh buffer.
    pub fn to_resp(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_resp(&mut v);
        v
    }
}

/// Number of decimal digits of `n`.
fn decimal_len(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

impl fmt::Debug for Cmd {
    /// Shows the arguments escaped, as `redis-cli` would; never used for secrets (AUTH is built
    /// by the connection layer, which does not log it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cmd[")?;
        for (i, a) in self.args().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}", escape_bytes(a))?;
        }
        f.write_str("]")
    }
}

/// Escapes bytes for logs and terminals: printable ASCII as is, everything else as `\xNN`,
/// wrapped in double quotes when anything needed escaping or the input has spaces.
pub fn escape_bytes(b: &[u8]) -> String {
    let needs_quotes = b.is_empty()
        || b.iter()
            .any(|&c| !(c.is_ascii_graphic()) || c == b'"' || c == b'\\');
    let mut s = String::with_capacity(b.len() + 2);
    if needs_quotes {
        s.push('"');
    }
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                use std::fmt::Write;
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    if needs_quotes {
        s.push('"');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_len_is_exact() {
        let mut c = Cmd::new("SET");
        c.arg(b"key").arg(&[0u8; 1234]).arg_int(-17i64);
        let v = c.to_resp();
        assert_eq!(v.len(), c.resp_len());
        assert!(v.starts_with(b"*4\r\n$3\r\nSET\r\n$3\r\nkey\r\n$1234\r\n"));
        assert!(v.ends_with(b"$3\r\n-17\r\n"));
    }

    #[test]
    fn args_round_trip() {
        let c = Cmd::from_args(["HSET", "h", "", "v"]);
        let args: Vec<&[u8]> = c.args().collect();
        assert_eq!(args, vec![&b"HSET"[..], b"h", b"", b"v"]);
        assert_eq!(c.get(4), None);
        assert_eq!(c.name(), b"HSET");
    }

    #[test]
    fn escape() {
        assert_eq!(escape_bytes(b"abc"), "abc");
        assert_eq!(escape_bytes(b"a b\x00"), "\"a b\\x00\"");
        assert_eq!(escape_bytes(b""), "\"\"");
    }
}
