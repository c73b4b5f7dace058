//! LZF (liblzf) decompression and compression, as used by RDB strings encoded `C3` (§3.2.2)
//! and LZF-compressed quicklist nodes.
//!
//! Format (liblzf `lzf_d.c`): a control byte `c`; `c < 32` is a literal run of `c + 1` bytes;
//! otherwise `len = c >> 5` (7 means "add the next byte"), the back-reference distance is
//! `((c & 0x1F) << 8) + next byte + 1`, and `len + 2` bytes are copied from that distance
//! (byte by byte, so the source may overlap the output).

/// Largest back-reference distance (13 bits + 1).
const MAX_OFF: usize = 1 << 13;
/// Longest match: 7 + 255 + 2.
const MAX_REF: usize = (1 << 8) + (1 << 3);
/// Longest literal run.
const MAX_LIT: usize = 1 << 5;

/// Decompresses `input` onto the end of `out`, which must grow by exactly `ulen` bytes.
/// Errors name the problem; nothing here panics on any input.
pub fn decompress_into(input: &[u8], ulen: usize, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let base = out.len();
    let end = base + ulen;
    let mut ip = 0usize;
    while ip < input.len() {
        let ctrl = input[ip] as usize;
        ip += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            if out.len() + n > end {
                return Err("output longer than declared");
            }
            let lit = input.get(ip..ip + n).ok_or("literal run past the input")?;
            out.extend_from_slice(lit);
            ip += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(ip).ok_or("truncated back-reference")? as usize;
                ip += 1;
            }
            let lo = *input.get(ip).ok_or("truncated back-reference")? as usize;
            ip += 1;
            let off = ((ctrl & 0x1F) << 8) + lo + 1;
            len += 2;
            let op = out.len();
            if off > op - base {
                return Err("back-reference before the start of the output");
            }
            if op + len > end {
                return Err("output longer than declared");
            }
            let from = op - off;
            if off >= len {
                out.extend_from_within(from..from + len);
            } else {
                for k in 0..len {
                    let b = out[from + k];
                    out.push(b);
                }
            }
        }
    }
    if out.len() != end {
        return Err("output shorter than declared");
    }
    Ok(())
}

/// Decompresses `input` into a fresh buffer of exactly `ulen` bytes.
pub fn decompress(input: &[u8], ulen: usize) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(ulen);
    decompress_into(input, ulen, &mut out)?;
    Ok(out)
}

/// Compresses `input` with a greedy single-probe hash, producing data any liblzf decoder
/// reads. The output can be longer than the input for incompressible data; callers that must
/// save space (the RDB writer rule of §3.2.2) compare the sizes themselves.
pub fn compress(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n + n / 32 + 2);
    let mut htab = vec![0usize; 1 << 14];
    let mut lit_start = 0usize;
    let mut i = 0usize;
    while i + 2 < n {
        let h = hash3(input[i], input[i + 1], input[i + 2]);
        let cand = htab[h];
        htab[h] = i + 1;
        if cand > 0 {
            let r = cand - 1;
            let dist = i - r; // r < i always: entries are inserted before i advances
            if dist <= MAX_OFF && input[r..r + 3] == input[i..i + 3] {
                let max = MAX_REF.min(n - i);
                let mut len = 3;
                while len < max && input[r + len] == input[i + len] {
                    len += 1;
                }
                flush_literals(&input[lit_start..i], &mut out);
                let off = dist - 1;
                let l = len - 2;
                if l < 7 {
                    out.push(((l << 5) | (off >> 8)) as u8);
                } else {
                    out.push(((7 << 5) | (off >> 8)) as u8);
                    out.push((l - 7) as u8);
                }
                out.push((off & 0xFF) as u8);
                i += len;
                lit_start = i;
                continue;
            }
        }
        i += 1;
    }
    flush_literals(&input[lit_start..], &mut out);
    out
}

fn hash3(a: u8, b: u8, c: u8) -> usize {
    let v = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
    (v.wrapping_mul(2_654_435_761) >> 18) as usize & ((1 << 14) - 1)
}

fn flush_literals(mut lit: &[u8], out: &mut Vec<u8>) {
    while !lit.is_empty() {
        let k = lit.len().min(MAX_LIT);
        out.push((k - 1) as u8);
        out.extend_from_slice(&lit[..k]);
        lit = &lit[k..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        // "aaaaaaaaaa": literal 'a', then a back-reference of 9 at distance 1.
        let c = compress(b"aaaaaaaaaa");
        assert!(c.len() < 10);
        assert_eq!(decompress(&c, 10).unwrap(), b"aaaaaaaaaa");
        // Hand-made: literal "ab", back-ref len 4 (ctrl len 2) at distance 2 → "ababab".
        assert_eq!(
            decompress(&[0x01, b'a', b'b', 0x40, 0x01], 6).unwrap(),
            b"ababab"
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(decompress(&[0x05, 1, 2], 6).is_err());
        assert!(decompress(&[0x20, 0x00], 3).is_err());
        assert!(decompress(&[0x00, 1], 2).is_err());
        assert!(decompress(&[0x00, 1, 0xE0], 300).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(0u8..4, 0..3000)) {
            let c = compress(&data);
            prop_assert_eq!(decompress(&c, data.len()).unwrap(), data);
        }

        #[test]
        fn random_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), ulen in 0usize..500) {
            let _ = decompress(&data, ulen);
        }
    }
}
