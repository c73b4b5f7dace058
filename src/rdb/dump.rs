//! `DUMP` payloads: `type byte, value, u16le RDB version, u64le CRC64` (Redis
//! `createDumpPayload`, `verifyDumpPayload`; the CRC is Redis's crc64 "Jones" variant over
//! everything before it).

use crate::rdb::value::{Progress, ValueDecoder};
use crate::rdb::Value;
use crate::wire::{DecodeError, ErrorKind, Fail, Limits, Reader};

/// A decoded DUMP payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Dump {
    /// The RDB object type byte.
    pub rdb_type: u8,
    /// The RDB version in the footer.
    pub rdb_version: u16,
    /// The whole value (all element batches merged).
    pub value: Value,
    /// The CRC64 in the footer (checked).
    pub checksum: u64,
}

/// Redis crc64 (Jones polynomial, reflected, init 0, no final xor; Redis `src/crc64.c`).
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    const POLY: u64 = 0x95AC_9329_AC4B_C9B5;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    for &b in data {
        crc = t[((crc ^ u64::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

fn err(offset: usize, kind: ErrorKind) -> DecodeError {
    DecodeError {
        offset: offset as u64,
        inner: None,
        kind,
    }
}

/// Decodes a complete DUMP payload, checking its CRC64. Offsets in errors are payload offsets.
pub fn decode_dump_payload(payload: &[u8], limits: Limits) -> Result<Dump, DecodeError> {
    if payload.len() < 11 {
        return Err(err(0, ErrorKind::Truncated("DUMP payload")));
    }
    let body_len = payload.len() - 10;
    let (body, footer) = payload.split_at(body_len);
    let mut v = [0u8; 2];
    v.copy_from_slice(&footer[..2]);
    let rdb_version = u16::from_le_bytes(v);
    let mut c = [0u8; 8];
    c.copy_from_slice(&footer[2..]);
    let stored = u64::from_le_bytes(c);
    let computed = crc64(0, &payload[..payload.len() - 8]);
    if stored != computed {
        return Err(err(
            payload.len() - 8,
            ErrorKind::BadChecksum { stored, computed },
        ));
    }
    let rdb_type = body[0];
    let whole = Limits {
        batch_elements: usize::MAX,
        batch_bytes: usize::MAX,
        ..limits
    };
    let mut vd = ValueDecoder::new(rdb_type, rdb_version < 10, whole).map_err(|k| err(0, k))?;
    let mut r = Reader::new(&body[1..]);
    let mut value: Option<Value> = None;
    loop {
        let p = vd.advance(&mut r).map_err(|e| match e {
            Fail::Bad { at, kind } => err(1 + at, kind),
            Fail::Short => err(1 + r.pos(), ErrorKind::Truncated("DUMP value")),
        })?;
        match p {
            Progress::Short => {
                return Err(err(1 + r.pos(), ErrorKind::Truncated("DUMP value")));
            }
            Progress::BatchFull | Progress::Done => {
                let b = vd.take_batch();
                match value.as_mut() {
                    None => value = Some(b),
                    Some(v) => v.append(b),
                }
                if p == Progress::Done {
                    break;
                }
            }
        }
    }
    if r.remaining() != 0 {
        return Err(err(1 + r.pos(), ErrorKind::TrailingBytes(r.remaining())));
    }
    Ok(Dump {
        rdb_type,
        rdb_version,
        value: value.unwrap_or(Value::Opaque(Vec::new())),
        checksum: stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_check_value() {
        // Redis src/crc64.c test: crc64(0, "123456789") == 0xe9c6d914c4b8d9ca.
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn string_payload() {
        let mut p = vec![0u8, 3, b'a', b'b', b'c', 10, 0];
        let c = crc64(0, &p);
        p.extend_from_slice(&c.to_le_bytes());
        let d = decode_dump_payload(&p, Limits::default()).unwrap();
        assert_eq!(d.value, Value::String(b"abc".to_vec()));
        assert_eq!(d.rdb_version, 10);
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(matches!(
            decode_dump_payload(&p, Limits::default()).unwrap_err().kind,
            ErrorKind::BadChecksum { .. }
        ));
    }
}
