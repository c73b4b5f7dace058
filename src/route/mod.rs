//! Cluster slot routing: which of Redis Cluster's 16384 slots a key belongs to.
//!
//! The slot of a key is `CRC16(key) mod 16384`, where CRC16 is the XMODEM variant (polynomial
//! 0x1021, initial value 0) and `key` is replaced by its *hashtag* when it has one: the bytes
//! between the first `{` and the first `}` after it, if there is at least one byte between them
//! (Redis `cluster.c`, `keyHashSlot`). Keys sharing a hashtag always land in the same slot.

pub mod split;

use std::fmt;

/// Number of slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// A cluster hash slot.
///
/// Invariant: the value is always `< SLOT_COUNT`; the only constructors check or reduce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u16);

impl Slot {
    /// The slot with number `n`, or `None` when `n >= 16384`.
    pub fn new(n: u16) -> Option<Slot> {
        (n < SLOT_COUNT).then_some(Slot(n))
    }

    /// The slot a key belongs to (hashtags honoured).
    pub fn of_key(key: &[u8]) -> Slot {
        Slot(crc16(hash_tag(key)) % SLOT_COUNT)
    }

    /// The slot number, `0..16384`.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {}", self.0)
    }
}

/// The part of `key` that is hashed: the hashtag content when there is a non-empty one,
/// otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = memchr::memchr(b'{', key) {
        let rest = &key[open + 1..];
        if let Some(close) = memchr::memchr(b'}', rest) {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// CRC16-XMODEM lookup table, computed at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC16 as Redis Cluster computes it (XMODEM: poly 0x1021, init 0, no reflection).
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_reference_value() {
        // The check value of CRC-16/XMODEM, also quoted in the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn known_slots() {
        // Values as `CLUSTER KEYSLOT` reports them.
        assert_eq!(Slot::of_key(b"foo").get(), 12182);
        assert_eq!(Slot::of_key(b"bar").get(), 5061);
        assert_eq!(Slot::of_key(b"").get(), 0);
    }

    #[test]
    fn hashtags() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(
            Slot::of_key(b"{user1000}.following"),
            Slot::of_key(b"{user1000}.followers")
        );
    }

    #[test]
    fn slot_invariant() {
        assert!(Slot::new(16383).is_some());
        assert!(Slot::new(16384).is_none());
    }
}
