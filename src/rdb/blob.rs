//! Readers of the Redis blob formats found inside RDB strings (§3.6.10): listpack, ziplist,
//! intset and zipmap. Each takes a complete buffer and hands every element to a callback, in
//! order. Integers are handed over as integers; callers that need text format them with
//! [`Elem::write_to`]. Layouts: Redis `listpack.c`, `ziplist.c`, `intset.c`, `zipmap.c`.

use crate::rdb::consts::*;
use crate::wire::{ErrorKind, Fail, RResult, Reader};

/// One element of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem<'a> {
    /// A string element.
    Str(&'a [u8]),
    /// An integer element.
    Int(i64),
}

impl Elem<'_> {
    /// Appends the element as Redis would return it (integers as decimal text).
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Elem::Str(s) => out.extend_from_slice(s),
            Elem::Int(v) => {
                let mut b = itoa::Buffer::new();
                out.extend_from_slice(b.format(*v).as_bytes());
            }
        }
    }

    /// The element as an integer (strings that parse as one are accepted, like
    /// `lpGetIntegerIfValid`).
    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Elem::Int(v) => Some(*v),
            Elem::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        }
    }

    /// Size in bytes once written as text (for batch accounting).
    pub(crate) fn text_len(&self) -> usize {
        match self {
            Elem::Str(s) => s.len(),
            Elem::Int(_) => 8,
        }
    }
}

fn corrupt<T>(at: usize, m: &'static str) -> RResult<T> {
    Reader::bad_at(at, ErrorKind::Corrupt(m))
}

/// Size of a listpack entry's back-length field for an entry of `l` bytes (`lpEncodeBacklen`).
fn lp_backlen_size(l: usize) -> usize {
    match l {
        0..=127 => 1,
        128..=16383 => 2,
        16384..=2_097_151 => 3,
        2_097_152..=268_435_455 => 4,
        _ => 5,
    }
}

/// Reads a listpack, calling `f` for each element. Returns the element count.
pub(crate) fn listpack<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> RResult<()>,
) -> RResult<usize> {
    let mut r = Reader::new(buf);
    let total = r.u32le().map_err(|e| e.complete(0, "listpack header"))? as usize;
    let count = r.u16le().map_err(|e| e.complete(0, "listpack header"))?;
    if total != buf.len() {
        return corrupt(0, "listpack total bytes differ from its string length");
    }
    let mut n = 0usize;
    loop {
        let at = r.pos();
        let b = r.u8().map_err(|e| e.complete(at, "listpack"))?;
        if b == LP_EOF {
            break;
        }
        let elem = lp_entry(&mut r, b).map_err(|e| e.complete(at, "listpack entry"))?;
        let l = r.pos() - at;
        r.skip(lp_backlen_size(l))
            .map_err(|e| e.complete(at, "listpack entry"))?;
        f(elem)?;
        n += 1;
    }
    if r.remaining() != 0 {
        return corrupt(r.pos(), "bytes after the listpack end marker");
    }
    if count != LP_HDR_NUMELE_UNKNOWN && usize::from(count) != n {
        return corrupt(4, "listpack element count differs from its entries");
    }
    Ok(n)
}

fn lp_entry<'a>(r: &mut Reader<'a>, b: u8) -> RResult<Elem<'a>> {
    if b & LP_ENCODING_7BIT_UINT_MASK == 0 {
        return Ok(Elem::Int(i64::from(b)));
    }
    if b & 0xC0 == LP_ENCODING_6BIT_STR {
        let n = usize::from(b & 0x3F);
        return Ok(Elem::Str(r.bytes(n)?));
    }
    if b & 0xE0 == LP_ENCODING_13BIT_INT {
        let lo = r.u8()?;
        let v = (i64::from(b & 0x1F) << 8) | i64::from(lo);
        // Sign-extend from 13 bits.
        let v = if v >= 1 << 12 { v - (1 << 13) } else { v };
        return Ok(Elem::Int(v));
    }
    if b & 0xF0 == LP_ENCODING_12BIT_STR {
        let lo = r.u8()?;
        let n = (usize::from(b & 0x0F) << 8) | usize::from(lo);
        return Ok(Elem::Str(r.bytes(n)?));
    }
    match b {
        LP_ENCODING_32BIT_STR => {
            let n = r.u32le()? as usize;
            Ok(Elem::Str(r.bytes(n)?))
        }
        LP_ENCODING_16BIT_INT => Ok(Elem::Int(i64::from(i16::from_le_bytes(r.array()?)))),
        LP_ENCODING_24BIT_INT => {
            let [a, b2, c] = r.array::<3>()?;
            let v = i32::from_le_bytes([0, a, b2, c]) >> 8;
            Ok(Elem::Int(i64::from(v)))
        }
        LP_ENCODING_32BIT_INT => Ok(Elem::Int(i64::from(i32::from_le_bytes(r.array()?)))),
        LP_ENCODING_64BIT_INT => Ok(Elem::Int(i64::from_le_bytes(r.array()?))),
        _ => {
            let at = r.pos().saturating_sub(1);
            corrupt(at, "invalid listpack entry encoding")
        }
    }
}

/// Reads a ziplist, calling `f` for each element. Returns the element count.
pub(crate) fn ziplist<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> RResult<()>,
) -> RResult<usize> {
    let mut r = Reader::new(buf);
    let zlbytes = r.u32le().map_err(|e| e.complete(0, "ziplist header"))? as usize;
    let _zltail = r.u32le().map_err(|e| e.complete(0, "ziplist header"))?;
    let zllen = r.u16le().map_err(|e| e.complete(0, "ziplist header"))?;
    if zlbytes != buf.len() {
        return corrupt(0, "ziplist size differs from its string length");
    }
    let mut n = 0usize;
    loop {
        let at = r.pos();
        let b = r.peek().map_err(|e| e.complete(at, "ziplist"))?;
        if b == ZIP_END {
            r.skip(1)?;
            break;
        }
        let elem = zip_entry(&mut r).map_err(|e| e.complete(at, "ziplist entry"))?;
        f(elem)?;
        n += 1;
    }
    if r.remaining() != 0 {
        return corrupt(r.pos(), "bytes after the ziplist end marker");
    }
    if zllen != u16::MAX && usize::from(zllen) != n {
        return corrupt(8, "ziplist element count differs from its entries");
    }
    Ok(n)
}

fn zip_entry<'a>(r: &mut Reader<'a>) -> RResult<Elem<'a>> {
    let p = r.u8()?;
    if p == ZIP_BIG_PREVLEN {
        r.skip(4)?;
    }
    let at = r.pos();
    let b = r.u8()?;
    match b >> 6 {
        0 => return Ok(Elem::Str(r.bytes(usize::from(b & 0x3F))?)),
        1 => {
            let lo = r.u8()?;
            let n = (usize::from(b & 0x3F) << 8) | usize::from(lo);
            return Ok(Elem::Str(r.bytes(n)?));
        }
        2 => {
            if b != ZIP_STR_32B {
                return corrupt(at, "invalid ziplist string encoding");
            }
            let n = u32::from_be_bytes(r.array()?) as usize;
            return Ok(Elem::Str(r.bytes(n)?));
        }
        _ => {}
    }
    let v = match b {
        ZIP_INT_16B => i64::from(i16::from_le_bytes(r.array()?)),
        ZIP_INT_32B => i64::from(i32::from_le_bytes(r.array()?)),
        ZIP_INT_64B => i64::from_le_bytes(r.array()?),
        ZIP_INT_24B => {
            let [a, b2, c] = r.array::<3>()?;
            i64::from(i32::from_le_bytes([0, a, b2, c]) >> 8)
        }
        ZIP_INT_8B => i64::from(r.u8()? as i8),
        ZIP_INT_IMM_MIN..=ZIP_INT_IMM_MAX => i64::from(b & 0x0F) - 1,
        _ => return corrupt(at, "invalid ziplist entry encoding"),
    };
    Ok(Elem::Int(v))
}

/// Reads an intset, calling `f` for each integer. Returns the count.
pub(crate) fn intset(buf: &[u8], mut f: impl FnMut(i64) -> RResult<()>) -> RResult<usize> {
    let mut r = Reader::new(buf);
    let enc = r.u32le().map_err(|e| e.complete(0, "intset header"))?;
    let len = r.u32le().map_err(|e| e.complete(0, "intset header"))? as usize;
    if !matches!(enc, 2 | 4 | 8) {
        return corrupt(0, "invalid intset encoding");
    }
    let enc = enc as usize;
    if len.checked_mul(enc) != Some(r.remaining()) {
        return corrupt(4, "intset length differs from its string length");
    }
    for _ in 0..len {
        let v = match enc {
            2 => i64::from(i16::from_le_bytes(r.array()?)),
            4 => i64::from(i32::from_le_bytes(r.array()?)),
            _ => i64::from_le_bytes(r.array()?),
        };
        f(v)?;
    }
    Ok(len)
}

/// Reads a zipmap (Redis < 2.6 small hashes), calling `f` with field then value.
pub(crate) fn zipmap<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> RResult<()>,
) -> RResult<usize> {
    let mut r = Reader::new(buf);
    let _zmlen = r.u8().map_err(|e| e.complete(0, "zipmap header"))?;
    let mut n = 0usize;
    loop {
        let at = r.pos();
        let b = r.peek().map_err(|e| e.complete(at, "zipmap"))?;
        if b == ZIPMAP_END {
            r.skip(1)?;
            break;
        }
        let step = |r: &mut Reader<'a>| -> RResult<(&'a [u8], &'a [u8])> {
            let klen = zipmap_len(r)?;
            let key = r.bytes(klen)?;
            let vlen = zipmap_len(r)?;
            let free = usize::from(r.u8()?);
            let val = r.bytes(vlen)?;
            r.skip(free)?;
            Ok((key, val))
        };
        let (k, v) = step(&mut r).map_err(|e| e.complete(at, "zipmap entry"))?;
        f(Elem::Str(k))?;
        f(Elem::Str(v))?;
        n += 1;
    }
    if r.remaining() != 0 {
        return corrupt(r.pos(), "bytes after the zipmap end marker");
    }
    Ok(n)
}

fn zipmap_len(r: &mut Reader<'_>) -> RResult<usize> {
    let b = r.u8()?;
    match b {
        ZIPMAP_BIGLEN => Ok(r.u32le()? as usize),
        ZIPMAP_END => Err(Fail::Bad {
            at: r.pos() - 1,
            kind: ErrorKind::Corrupt("zipmap entry length is the end marker"),
        }),
        _ => Ok(usize::from(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp_all(buf: &[u8]) -> RResult<Vec<Vec<u8>>> {
        let mut v = Vec::new();
        listpack(buf, |e| {
            let mut s = Vec::new();
            e.write_to(&mut s);
            v.push(s);
            Ok(())
        })?;
        Ok(v)
    }

    #[test]
    fn listpack_doc_example() {
        let lp = [0x0D, 0, 0, 0, 2, 0, 0x81, b'a', 2, 0x81, b'b', 2, 0xFF];
        assert_eq!(lp_all(&lp).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        // Truncated or lying listpacks are errors, never panics.
        assert!(lp_all(&lp[..12]).is_err());
        let mut bad = lp;
        bad[4] = 3;
        assert!(lp_all(&bad).is_err());
    }

    #[test]
    fn listpack_integers() {
        // 13-bit -1 = 0xDF 0xFF, 16-bit 1000, 24-bit -100000, 7-bit 5.
        let mut lp = vec![0, 0, 0, 0, 4, 0];
        lp.extend_from_slice(&[0xDF, 0xFF, 2]);
        lp.extend_from_slice(&[0xF1, 0xE8, 0x03, 3]);
        let v = (-100000i32).to_le_bytes();
        lp.extend_from_slice(&[0xF2, v[0], v[1], v[2], 4]);
        lp.extend_from_slice(&[5, 1]);
        lp.push(0xFF);
        let n = lp.len() as u32;
        lp[..4].copy_from_slice(&n.to_le_bytes());
        assert_eq!(
            lp_all(&lp).unwrap(),
            vec![
                b"-1".to_vec(),
                b"1000".to_vec(),
                b"-100000".to_vec(),
                b"5".to_vec()
            ]
        );
    }

    #[test]
    fn ziplist_and_intset() {
        // ziplist ["ab", 12 (imm), -2 (int8)]
        let mut zl = vec![0u8; 10];
        zl.extend_from_slice(&[0, 0x02, b'a', b'b']);
        zl.extend_from_slice(&[4, 0xFD]);
        zl.extend_from_slice(&[2, 0xFE, 0xFE]);
        zl.push(0xFF);
        let n = zl.len() as u32;
        zl[..4].copy_from_slice(&n.to_le_bytes());
        zl[8..10].copy_from_slice(&3u16.to_le_bytes());
        let mut got = Vec::new();
        ziplist(&zl, |e| {
            let mut s = Vec::new();
            e.write_to(&mut s);
            got.push(s);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![b"ab".to_vec(), b"12".to_vec(), b"-2".to_vec()]);

        let mut is = vec![2, 0, 0, 0, 2, 0, 0, 0];
        is.extend_from_slice(&(-5i16).to_le_bytes());
        is.extend_from_slice(&7i16.to_le_bytes());
        let mut ints = Vec::new();
        intset(&is, |v| {
            ints.push(v);
            Ok(())
        })
        .unwrap();
        assert_eq!(ints, vec![-5, 7]);
        assert!(intset(&is[..11], |_| Ok(())).is_err());
    }
}
