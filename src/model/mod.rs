//! Owned, `Send` data that crosses threads: a flat Redis command ([`Cmd`]), and the newtypes
//! that name a flow, a journal position and a database.
//!
//! Nothing here does I/O. A [`Cmd`] keeps every argument in one byte buffer plus end offsets, so
//! a command costs one allocation when it has at most [`INLINE_ARGS`] arguments (the offsets
//! live inside the `Cmd`; nearly every journal command: `SET k v`, `SET k v PXAT t`, `DEL k`,
//! `HSET k f v`) and two otherwise, and its RESP encoding size is known exactly before anything
//! is written.

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

/// Arguments whose end offsets a [`Cmd`] keeps inline, without a second allocation.
pub const INLINE_ARGS: usize = 5;

/// The end offset of each argument: inline while there are at most [`INLINE_ARGS`] and every
/// offset fits in a `u32`, on the heap after that (32 bytes: a `Cmd` is 56).
#[derive(Clone)]
enum Ends {
    Inline { len: u8, at: [u32; INLINE_ARGS] },
    Heap(Vec<usize>),
}

impl Default for Ends {
    fn default() -> Ends {
        Ends::Inline {
            len: 0,
            at: [0; INLINE_ARGS],
        }
    }
}

impl Ends {
    fn with_capacity(args: usize) -> Ends {
        if args <= INLINE_ARGS {
            Ends::default()
        } else {
            Ends::Heap(Vec::with_capacity(args))
        }
    }

    fn len(&self) -> usize {
        match self {
            Ends::Inline { len, .. } => *len as usize,
            Ends::Heap(v) => v.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, i: usize) -> Option<usize> {
        match self {
            Ends::Inline { len, at } => at[..*len as usize].get(i).map(|&e| e as usize),
            Ends::Heap(v) => v.get(i).copied(),
        }
    }

    fn push(&mut self, end: usize) {
        match self {
            Ends::Inline { len, at } => {
                let n = *len as usize;
                match u32::try_from(end) {
                    Ok(e) if n < INLINE_ARGS => {
                        at[n] = e;
                        *len += 1;
                    }
                    _ => {
                        let mut v = Vec::with_capacity((n + 1).max(2 * INLINE_ARGS));
                        v.extend(at[..n].iter().map(|&e| e as usize));
                        v.push(end);
                        *self = Ends::Heap(v);
                    }
                }
            }
            Ends::Heap(v) => v.push(end),
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).map(move |i| self.get(i).unwrap_or(0))
    }
}

/// One Redis command, stored flat: all argument bytes back to back in `data`, and the end
/// offset of each argument in `ends`.
///
/// Invariant: `ends` is non-decreasing and its last element (if any) equals `data.len()`.
#[derive(Clone, Default)]
pub struct Cmd {
    data: Vec<u8>,
    ends: Ends,
}

impl PartialEq for Cmd {
    /// The same arguments (however the offsets are stored).
    fn eq(&self, other: &Cmd) -> bool {
        self.data == other.data && self.ends.iter().eq(other.ends.iter())
    }
}

impl Eq for Cmd {}

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
            ends: Ends::with_capacity(args),
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
        let end = self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(p) => self.ends.get(p)?,
            None => 0,
        };
        self.data.get(start..end)
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
        for end in self.ends.iter() {
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
        for end in self.ends.iter() {
            out.push(b'$');
            out.extend_from_slice(ibuf.format(end - start).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.data[start..end]);
            out.extend_from_slice(b"\r\n");
            start = end;
        }
    }

    /// Whether this is a plain `SET key value` (any case, no option): the one form that
    /// `MSET key value` does exactly (both replace any type and drop any TTL).
    pub fn is_plain_set(&self) -> bool {
        self.len() == 3 && self.name().eq_ignore_ascii_case(b"SET")
    }

    /// Appends arguments `from..` as RESP bulk strings (no array header) to `out`: the
    /// writer builds one `MSET` from several plain `SET`s with it.
    pub fn encode_args_from(&self, from: usize, out: &mut Vec<u8>) {
        let mut ibuf = itoa::Buffer::new();
        for a in self.args().skip(from) {
            out.reserve(a.len() + 16);
            out.push(b'$');
            out.extend_from_slice(ibuf.format(a.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
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
    fn offsets_spill_from_inline_to_heap_and_compare_by_content() {
        let names: Vec<String> = (0..INLINE_ARGS + 3).map(|i| format!("a{i}")).collect();
        let mut grown = Cmd::default();
        for (i, n) in names.iter().enumerate() {
            grown.arg(n.as_bytes());
            assert_eq!(grown.len(), i + 1);
            assert_eq!(grown.get(i), Some(n.as_bytes()));
            assert_eq!(grown.get(0), Some(&b"a0"[..]));
        }
        let args: Vec<&[u8]> = grown.args().collect();
        assert_eq!(args.len(), INLINE_ARGS + 3);
        // Reserved on the heap from the start: equal to the one that spilled.
        let mut reserved = Cmd::with_capacity(INLINE_ARGS + 3, 64);
        for n in &names {
            reserved.arg(n.as_bytes());
        }
        assert_eq!(grown, reserved);
        assert_eq!(grown.to_resp(), reserved.to_resp());
        assert_eq!(grown.to_resp().len(), grown.resp_len());
        let short = Cmd::from_args(&names[..2]);
        assert_ne!(short, grown);
        assert_eq!(short, Cmd::from_args(&names[..2]));
        assert!(
            std::mem::size_of::<Cmd>() <= 56,
            "{}",
            std::mem::size_of::<Cmd>()
        );
    }

    #[test]
    fn plain_set_and_args_from() {
        assert!(Cmd::from_args(["set", "k", "v"]).is_plain_set());
        assert!(!Cmd::from_args(["SET", "k", "v", "PXAT", "9"]).is_plain_set());
        assert!(!Cmd::from_args(["SETNX", "k", "v"]).is_plain_set());
        let mut out = Vec::new();
        Cmd::from_args(["SET", "key", ""]).encode_args_from(1, &mut out);
        assert_eq!(out, b"$3\r\nkey\r\n$0\r\n\r\n");
    }

    #[test]
    fn escape() {
        assert_eq!(escape_bytes(b"abc"), "abc");
        assert_eq!(escape_bytes(b"a b\x00"), "\"a b\\x00\"");
        assert_eq!(escape_bytes(b""), "\"\"");
    }
}
