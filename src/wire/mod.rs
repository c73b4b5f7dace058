//! Checked primitive reads over untrusted bytes, with caps on every length.
//!
//! Everything the snapshot ([`crate::rdb`]) and journal ([`crate::journal`]) decoders read goes
//! through [`Reader`]: packed unsigned integers (`pu`, §3.2.1 of the protocol document), RDB
//! strings with their integer and LZF forms (§3.2.2), fixed little-endian integers and binary
//! doubles (§3.2.3). A read either succeeds, reports that the input is too short
//! ([`Fail::Short`], the caller waits for more bytes and retries the whole unit), or fails with
//! an [`ErrorKind`] and the position of the offending byte. Every length that comes from the
//! remote is checked against [`Limits`] before anything is allocated.
//!
//! [`Blobs`] is the flat list of byte strings that decoded collections are delivered in (one
//! data buffer plus end offsets, like [`crate::model::Cmd`]).

pub mod lzf;

use std::fmt;

/// Caps on what the remote may make us allocate, and the batch size of decoded collections.
///
/// Every declared length and count is checked against these before allocation; a value past a
/// cap is an error ([`ErrorKind::TooLarge`]), never a truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single string (key, value, element, listpack blob, journal argument), bytes.
    /// Redis's own cap on a string is 512 MiB.
    pub max_string: usize,
    /// Largest declared element count of one collection (members, pairs, nodes, listpacks).
    pub max_elements: u64,
    /// Largest compressed blob (ZSTD/LZ4 frame) and largest decompressed content, bytes.
    /// Dragonfly compresses only buffers of at most 1 MiB (§3.7).
    pub max_blob: usize,
    /// Largest journal entry payload (`total_len` of a COMMAND), bytes.
    pub max_command: usize,
    /// Largest number of arguments of one journal command.
    pub max_args: usize,
    /// A decoded collection is emitted in pieces of at most this many elements
    /// (a pair counts as one element).
    pub batch_elements: usize,
    /// ... and at most about this many bytes of element data (a piece is closed as soon as it
    /// reaches this size, so it can exceed it by one element).
    pub batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_string: 512 << 20,
            max_elements: 1 << 32,
            max_blob: 64 << 20,
            max_command: 1 << 30,
            max_args: 1 << 24,
            batch_elements: 1024,
            batch_bytes: 1 << 20,
        }
    }
}

/// What went wrong, without the position (see [`DecodeError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The stream does not start with `REDIS` and four digits.
    BadMagic,
    /// An RDB version this decoder does not read.
    UnsupportedVersion(u32),
    /// A top-level opcode that is not in §3.4.
    UnknownOpcode(u8),
    /// An object type byte that is not in §3.6.
    UnknownType(u8),
    /// A known type that cannot be decoded (pre-GA module values, Redis 7.4 field-TTL hashes).
    UnsupportedType(u8),
    /// A journal opcode that is not in §4.2.
    UnknownJournalOpcode(u8),
    /// A `pu` whose first byte is `82`–`BF`, or an encoding marker where a length is expected.
    BadLength(u8),
    /// A string encoding marker `C4`–`FF`.
    BadStringEncoding(u8),
    /// A declared length or count past its cap.
    TooLarge {
        /// What was being read ("string", "set members", …).
        what: &'static str,
        /// The declared value.
        len: u64,
        /// The cap it exceeded.
        max: u64,
    },
    /// LZF data that does not decompress to the declared length.
    Lzf(&'static str),
    /// A ZSTD or LZ4 frame that fails to decompress.
    Decompress(String),
    /// A structure that contradicts itself (bad listpack, budget overrun, …).
    Corrupt(&'static str),
    /// A complete buffer (blob, listpack, chunk) ended in the middle of an item.
    Truncated(&'static str),
    /// The 40 bytes after EOF + checksum are not this flow's eof token.
    TokenMismatch,
    /// Input after the end of a standalone RDB file or DUMP payload.
    TrailingBytes(usize),
    /// The DUMP payload's CRC64 does not match its content.
    BadChecksum {
        /// CRC64 stored in the payload.
        stored: u64,
        /// CRC64 computed over the payload.
        computed: u64,
    },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::BadMagic => write!(f, "not an RDB stream (bad magic)"),
            ErrorKind::UnsupportedVersion(v) => write!(f, "unsupported RDB version {v}"),
            ErrorKind::UnknownOpcode(b) => write!(f, "unknown opcode 0x{b:02x}"),
            ErrorKind::UnknownType(b) => write!(f, "unknown object type 0x{b:02x} ({b})"),
            ErrorKind::UnsupportedType(b) => write!(
                f,
                "unsupported object type {b} ({})",
                crate::rdb::consts::type_name(*b)
            ),
            ErrorKind::UnknownJournalOpcode(b) => write!(f, "unknown journal opcode 0x{b:02x}"),
            ErrorKind::BadLength(b) => write!(f, "invalid length encoding byte 0x{b:02x}"),
            ErrorKind::BadStringEncoding(b) => write!(f, "invalid string encoding byte 0x{b:02x}"),
            ErrorKind::TooLarge { what, len, max } => {
                write!(f, "{what} length {len} exceeds the limit {max}")
            }
            ErrorKind::Lzf(m) => write!(f, "LZF error: {m}"),
            ErrorKind::Decompress(m) => write!(f, "decompression error: {m}"),
            ErrorKind::Corrupt(m) => write!(f, "corrupt data: {m}"),
            ErrorKind::Truncated(m) => write!(f, "truncated {m}"),
            ErrorKind::TokenMismatch => write!(f, "eof token does not match the FLOW reply"),
            ErrorKind::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the end"),
            ErrorKind::BadChecksum { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#018x}, computed {computed:#018x}"
            ),
        }
    }
}

/// A decode failure: the kind and where it happened.
///
/// `offset` is the absolute byte offset in the stream the decoder was fed (the caller adds the
/// flow id and LSN). When the failure lies inside a decompressed blob, `offset` is where the
/// blob's opcode starts on the wire and `inner` the offset inside its decompressed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Absolute byte offset in the input stream.
    pub offset: u64,
    /// Offset inside the decompressed blob that starts at `offset`, if any.
    pub inner: Option<u64>,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner {
            None => write!(f, "decode error at byte {}: {}", self.offset, self.kind),
            Some(i) => write!(
                f,
                "decode error at byte {} (offset {} inside the compressed blob): {}",
                self.offset, i, self.kind
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a read did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// The input ends before the item does; retry the whole item with more bytes.
    Short,
    /// The bytes are invalid; `at` is the position in the reader's buffer.
    Bad {
        /// Position of the offending byte in the buffer given to the [`Reader`].
        at: usize,
        /// What went wrong.
        kind: ErrorKind,
    },
}

impl Fail {
    /// Turns `Short` into a `Truncated` error at `at`: used where the buffer is known complete.
    pub fn complete(self, at: usize, what: &'static str) -> Fail {
        match self {
            Fail::Short => Fail::Bad {
                at,
                kind: ErrorKind::Truncated(what),
            },
            bad => bad,
        }
    }
}

/// Result of a [`Reader`] method.
pub type RResult<T> = Result<T, Fail>;

/// A decoded RDB string that is either a slice of the input or an owned buffer (integer text,
/// LZF output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdbStr<'a> {
    /// Raw bytes, borrowed from the input.
    Raw(&'a [u8]),
    /// Bytes produced by decoding (integer forms, LZF).
    Owned(Vec<u8>),
}

impl RdbStr<'_> {
    /// The string's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RdbStr::Raw(b) => b,
            RdbStr::Owned(v) => v,
        }
    }

    /// The string as an owned vector.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            RdbStr::Raw(b) => b.to_vec(),
            RdbStr::Owned(v) => v,
        }
    }
}

/// A cursor over untrusted bytes. Every method checks bounds and caps; none panics.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread bytes.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// The bytes read since position `start` (a value from [`Reader::pos`]).
    pub fn since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or(&[])
    }

    /// Moves back to `pos` (a value from [`Reader::pos`]), to retry a unit that was short.
    pub fn rewind(&mut self, pos: usize) {
        if pos <= self.pos {
            self.pos = pos;
        }
    }

    /// An error of `kind` at the current position.
    pub fn bad<T>(&self, kind: ErrorKind) -> RResult<T> {
        Err(Fail::Bad { at: self.pos, kind })
    }

    /// An error of `kind` at position `at`.
    pub fn bad_at<T>(at: usize, kind: ErrorKind) -> RResult<T> {
        Err(Fail::Bad { at, kind })
    }

    /// The next byte without consuming it.
    pub fn peek(&self) -> RResult<u8> {
        self.buf.get(self.pos).copied().ok_or(Fail::Short)
    }

    /// One byte.
    pub fn u8(&mut self) -> RResult<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    /// `n` bytes, borrowed. The caller has already capped `n`.
    pub fn bytes(&mut self, n: usize) -> RResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(Fail::Short);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> RResult<()> {
        self.bytes(n).map(|_| ())
    }

    /// A fixed array of `N` bytes.
    pub fn array<const N: usize>(&mut self) -> RResult<[u8; N]> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// u16 little-endian.
    pub fn u16le(&mut self) -> RResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// u32 little-endian.
    pub fn u32le(&mut self) -> RResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// u64 little-endian.
    pub fn u64le(&mut self) -> RResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// i64 little-endian.
    pub fn i64le(&mut self) -> RResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// u64 big-endian.
    pub fn u64be(&mut self) -> RResult<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// IEEE-754 binary64, little-endian (§3.2.3).
    pub fn f64le(&mut self) -> RResult<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A packed unsigned integer `pu` (§3.2.1). `C0`–`FF` and `82`–`BF` are errors.
    pub fn pu(&mut self) -> RResult<u64> {
        let at = self.pos;
        let b = self.peek()?;
        match b >> 6 {
            0 => {
                self.pos += 1;
                Ok(u64::from(b & 0x3F))
            }
            1 => {
                let [b0, b1] = self.array::<2>()?;
                Ok((u64::from(b0 & 0x3F) << 8) | u64::from(b1))
            }
            _ if b == 0x80 => {
                let a = self.array::<5>()?;
                Ok(u64::from(u32::from_be_bytes([a[1], a[2], a[3], a[4]])))
            }
            _ if b == 0x81 => {
                let a = self.array::<9>()?;
                let mut v = [0u8; 8];
                v.copy_from_slice(&a[1..]);
                Ok(u64::from_be_bytes(v))
            }
            _ => Reader::bad_at(at, ErrorKind::BadLength(b)),
        }
    }

    /// A `pu` used as a length or count, checked against `max`.
    pub fn len(&mut self, what: &'static str, max: u64) -> RResult<u64> {
        let at = self.pos;
        let n = self.pu()?;
        if n > max {
            return Reader::bad_at(at, ErrorKind::TooLarge { what, len: n, max });
        }
        Ok(n)
    }

    /// A `pu` used as a byte length, checked against `max`.
    pub fn len_usize(&mut self, what: &'static str, max: usize) -> RResult<usize> {
        let n = self.len(what, max as u64)?;
        // n <= max, which is a usize.
        Ok(n as usize)
    }

    /// An RDB string (§3.2.2): raw, integer (`C0`/`C1`/`C2`) or LZF (`C3`), capped at
    /// `max_string` both before and after decompression.
    pub fn rdb_str(&mut self, max_string: usize) -> RResult<RdbStr<'a>> {
        let at = self.pos;
        let b = self.peek()?;
        if b >> 6 != 3 {
            let n = self.len_usize("string", max_string)?;
            return Ok(RdbStr::Raw(self.bytes(n)?));
        }
        let mut out = Vec::new();
        self.encoded_str_into(b, at, max_string, &mut out)?;
        Ok(RdbStr::Owned(out))
    }

    /// An RDB string appended to `out` (saves a copy for raw strings vs [`Reader::rdb_str`]).
    /// On failure `out` may hold a partial string; callers truncate it back.
    pub fn rdb_str_into(&mut self, max_string: usize, out: &mut Vec<u8>) -> RResult<()> {
        let at = self.pos;
        let b = self.peek()?;
        if b >> 6 != 3 {
            let n = self.len_usize("string", max_string)?;
            out.extend_from_slice(self.bytes(n)?);
            return Ok(());
        }
        self.encoded_str_into(b, at, max_string, out)
    }

    /// Skips an RDB string (checks caps and LZF framing, does not decompress).
    pub fn skip_rdb_str(&mut self, max_string: usize) -> RResult<()> {
        let at = self.pos;
        let b = self.peek()?;
        if b >> 6 != 3 {
            let n = self.len_usize("string", max_string)?;
            return self.skip(n);
        }
        self.pos += 1;
        match b & 0x3F {
            0 => self.skip(1),
            1 => self.skip(2),
            2 => self.skip(4),
            3 => {
                let clen = self.len_usize("LZF compressed string", max_string)?;
                self.len_usize("LZF string", max_string)?;
                self.skip(clen)
            }
            _ => Reader::bad_at(at, ErrorKind::BadStringEncoding(b)),
        }
    }

    fn encoded_str_into(
        &mut self,
        b: u8,
        at: usize,
        max_string: usize,
        out: &mut Vec<u8>,
    ) -> RResult<()> {
        self.pos += 1;
        let v: i64 = match b & 0x3F {
            0 => i64::from(self.u8()? as i8),
            1 => i64::from(i16::from_le_bytes(self.array()?)),
            2 => i64::from(i32::from_le_bytes(self.array()?)),
            3 => {
                let clen = self.len_usize("LZF compressed string", max_string)?;
                let ulen = self.len_usize("LZF string", max_string)?;
                let data = self.bytes(clen)?;
                let start = out.len();
                out.reserve(ulen);
                if let Err(m) = lzf::decompress_into(data, ulen, out) {
                    out.truncate(start);
                    return Reader::bad_at(at, ErrorKind::Lzf(m));
                }
                return Ok(());
            }
            _ => return Reader::bad_at(at, ErrorKind::BadStringEncoding(b)),
        };
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(buf.format(v).as_bytes());
        Ok(())
    }
}

/// Appends `v` as a packed unsigned integer in its shortest form (§3.2.1).
pub fn put_pu(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.push(0x40 | (v >> 8) as u8);
        out.push(v as u8);
    } else if v <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends `s` as a raw RDB string: `pu(len)` then the bytes.
pub fn put_raw_str(out: &mut Vec<u8>, s: &[u8]) {
    put_pu(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A flat list of byte strings: all bytes back to back in one buffer plus the end offset of
/// each string. Decoded collections use it so a batch of N elements costs two allocations.
///
/// Invariant: `ends` is non-decreasing and its last element (if any) equals `data.len()`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blobs {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Blobs {
    /// An empty list.
    pub fn new() -> Blobs {
        Blobs::default()
    }

    /// An empty list with room for `strings` strings totalling `bytes` bytes.
    pub fn with_capacity(strings: usize, bytes: usize) -> Blobs {
        Blobs {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(strings),
        }
    }

    /// Appends one string.
    pub fn push(&mut self, s: &[u8]) {
        self.data.extend_from_slice(s);
        self.ends.push(self.data.len());
    }

    /// Appends the decimal text of an integer.
    pub fn push_int(&mut self, v: i64) {
        let mut buf = itoa::Buffer::new();
        self.push(buf.format(v).as_bytes());
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total bytes of string data.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// String `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.data.get(start..end)
    }

    /// Iterates over the strings.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).map(move |i| self.get(i).unwrap_or(&[]))
    }

    /// Iterates over consecutive pairs (field, value); a trailing odd string is ignored.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.ends.len() / 2).map(move |i| {
            (
                self.get(2 * i).unwrap_or(&[]),
                self.get(2 * i + 1).unwrap_or(&[]),
            )
        })
    }

    /// Appends every string of `other`.
    pub fn extend(&mut self, other: &Blobs) {
        let base = self.data.len();
        self.data.extend_from_slice(&other.data);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// The current end, to drop everything pushed after it with [`Blobs::rollback`].
    pub(crate) fn mark(&self) -> (usize, usize) {
        (self.data.len(), self.ends.len())
    }

    /// Drops everything after `mark`.
    pub(crate) fn rollback(&mut self, mark: (usize, usize)) {
        self.data.truncate(mark.0);
        self.ends.truncate(mark.1);
    }

    /// Removes everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// The strings as owned vectors (tests, the inspector).
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

impl fmt::Debug for Blobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(crate::model::escape_bytes))
            .finish()
    }
}

impl<A: AsRef<[u8]>> FromIterator<A> for Blobs {
    fn from_iter<I: IntoIterator<Item = A>>(iter: I) -> Blobs {
        let mut b = Blobs::new();
        for a in iter {
            b.push(a.as_ref());
        }
        b
    }
}
