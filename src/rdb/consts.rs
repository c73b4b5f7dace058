//! Every byte value the snapshot decoder recognises: top-level opcodes, object type bytes,
//! string and length encodings, quicklist containers, blob (listpack, ziplist, intset, zipmap)
//! encodings, module opcodes, stream listpack flags and Dragonfly's key-mask bits.
//!
//! Sources: Redis `src/rdb.h`, `src/listpack.c`, `src/ziplist.c`, `src/intset.c`,
//! `src/zipmap.c`, `src/t_stream.c`; Dragonfly `src/redis/rdb.h`,
//! `src/server/rdb_extensions.h`, `src/server/common.h`. The protocol document
//! (`docs/dragonfly-replication-protocol.md` §3.2–§3.6) explains each one.

// ---------------------------------------------------------------------------------------------
// Object type bytes (the byte where a "type" is expected, §3.4, §3.6).
// ---------------------------------------------------------------------------------------------

/// Plain string: `str(value)` (Redis `RDB_TYPE_STRING`).
pub const TYPE_STRING: u8 = 0;
/// Linked list: `pu(count)` then `count × str` (Redis ≤ 3.2 `RDB_TYPE_LIST`).
pub const TYPE_LIST: u8 = 1;
/// Hash-table set: `pu(count)` then `count × str(member)` (`RDB_TYPE_SET`).
pub const TYPE_SET: u8 = 2;
/// Skiplist zset with text scores: `pu(count)` then `count × (str(member) text_double)`
/// (`RDB_TYPE_ZSET`; never emitted by Dragonfly).
pub const TYPE_ZSET: u8 = 3;
/// Hash table: `pu(count)` then `count × (str(field) str(value))` (`RDB_TYPE_HASH`).
pub const TYPE_HASH: u8 = 4;
/// Skiplist zset with binary scores: `pu(count)` then `count × (str(member) f64le)`
/// (`RDB_TYPE_ZSET_2`).
pub const TYPE_ZSET_2: u8 = 5;
/// Module value, pre-GA format (`RDB_TYPE_MODULE_PRE_GA`); cannot be skipped safely.
pub const TYPE_MODULE_PRE_GA: u8 = 6;
/// Module value with self-describing opcodes (`RDB_TYPE_MODULE_2`); skippable.
pub const TYPE_MODULE_2: u8 = 7;
/// Hash as a zipmap blob (`RDB_TYPE_HASH_ZIPMAP`, Redis < 2.6).
pub const TYPE_HASH_ZIPMAP: u8 = 9;
/// List as one ziplist blob (`RDB_TYPE_LIST_ZIPLIST`, Redis < 3.2).
pub const TYPE_LIST_ZIPLIST: u8 = 10;
/// Set of integers as an intset blob (`RDB_TYPE_SET_INTSET`).
pub const TYPE_SET_INTSET: u8 = 11;
/// Zset as a ziplist blob, member/score alternating (`RDB_TYPE_ZSET_ZIPLIST`).
pub const TYPE_ZSET_ZIPLIST: u8 = 12;
/// Hash as a ziplist blob, field/value alternating (`RDB_TYPE_HASH_ZIPLIST`).
pub const TYPE_HASH_ZIPLIST: u8 = 13;
/// Quicklist of ziplists: `pu(nodes)` then `nodes × str(ziplist)` (`RDB_TYPE_LIST_QUICKLIST`).
pub const TYPE_LIST_QUICKLIST: u8 = 14;
/// Stream, first format (`RDB_TYPE_STREAM_LISTPACKS`).
pub const TYPE_STREAM_LISTPACKS: u8 = 15;
/// Hash as a listpack blob (`RDB_TYPE_HASH_LISTPACK`).
pub const TYPE_HASH_LISTPACK: u8 = 16;
/// Zset as a listpack blob (`RDB_TYPE_ZSET_LISTPACK`).
pub const TYPE_ZSET_LISTPACK: u8 = 17;
/// Quicklist v2: `pu(nodes)` then `nodes × (pu(container) str(data))`
/// (`RDB_TYPE_LIST_QUICKLIST_2`).
pub const TYPE_LIST_QUICKLIST_2: u8 = 18;
/// Stream with first id, max deleted id, entries added and group entries-read
/// (`RDB_TYPE_STREAM_LISTPACKS_2`, Redis 7.0).
pub const TYPE_STREAM_LISTPACKS_2: u8 = 19;
/// Redis 7.2: set as a listpack blob (`RDB_TYPE_SET_LISTPACK`). In a stream whose RDB version
/// is below 10 (every Dragonfly stream) the same byte means old JSON (§3.6.7), as Dragonfly's
/// own loader reads it.
pub const TYPE_SET_LISTPACK: u8 = 20;
/// Dragonfly v1.10–v1.14 JSON (`RDB_TYPE_JSON_OLD`), same byte as [`TYPE_SET_LISTPACK`].
pub const TYPE_JSON_OLD: u8 = 20;
/// Stream with consumer active-time (`RDB_TYPE_STREAM_LISTPACKS_3`, Redis 7.2; Dragonfly's
/// default since v1.27).
pub const TYPE_STREAM_LISTPACKS_3: u8 = 21;
/// Redis 7.4 pre-GA hash with field metadata (`RDB_TYPE_HASH_METADATA_PRE_GA`).
pub const TYPE_HASH_METADATA_PRE_GA: u8 = 22;
/// Redis 7.4 pre-GA listpack hash with field TTLs (`RDB_TYPE_HASH_LISTPACK_EX_PRE_GA`).
pub const TYPE_HASH_LISTPACK_EX_PRE_GA: u8 = 23;
/// Redis 7.4 hash with field TTLs (`RDB_TYPE_HASH_METADATA`).
pub const TYPE_HASH_METADATA: u8 = 24;
/// Redis 7.4 listpack hash with field TTLs (`RDB_TYPE_HASH_LISTPACK_EX`).
pub const TYPE_HASH_LISTPACK_EX: u8 = 25;
/// Dragonfly JSON: `str(json text)` (`RDB_TYPE_JSON`, Dragonfly `rdb_extensions.h`, v1.15+).
pub const TYPE_JSON: u8 = 30;
/// Dragonfly hash with per-field TTL: `pu(count)` then `count × (str f, str v, str ttl)`
/// (`RDB_TYPE_HASH_WITH_EXPIRY`, v1.13+).
pub const TYPE_HASH_WITH_EXPIRY: u8 = 31;
/// Dragonfly set with per-member TTL: `pu(count)` then `count × (str m, str ttl)`
/// (`RDB_TYPE_SET_WITH_EXPIRY`, v1.13+).
pub const TYPE_SET_WITH_EXPIRY: u8 = 32;
/// Dragonfly scalable bloom filter (`RDB_TYPE_SBF`, v1.17+), §3.6.8.
pub const TYPE_SBF: u8 = 33;
/// Dragonfly scalable bloom filter with chunked filters (`RDB_TYPE_SBF2`, v1.35+), §3.6.8.
pub const TYPE_SBF2: u8 = 34;
/// Dragonfly count-min sketch (`RDB_TYPE_CMS`, v1.38+), §3.6.9.
pub const TYPE_CMS: u8 = 35;
/// Dragonfly top-k (`RDB_TYPE_TOPK`, v1.38+), §3.6.9.
pub const TYPE_TOPK: u8 = 36;
/// Dragonfly cuckoo filter (`RDB_TYPE_CUCKOO`, v1.40+), §3.6.9.
pub const TYPE_CUCKOO: u8 = 37;

/// Seconds added to a Dragonfly per-field / per-member TTL to get unix seconds
/// (`kMemberExpiryBase` in Dragonfly `src/server/common.h`: 2023-02-01T00:00:00Z).
pub const MEMBER_EXPIRY_BASE: i64 = 1_675_209_600;

// ---------------------------------------------------------------------------------------------
// Top-level opcodes (§3.4).
// ---------------------------------------------------------------------------------------------

/// Dragonfly: end of this flow's snapshot traversal, then 8 zero bytes (`RDB_OPCODE_FULLSYNC_END`).
pub const OP_FULLSYNC_END: u8 = 200;
/// Dragonfly: a zstd frame `pu(len) bytes` re-parsed as top-level items
/// (`RDB_OPCODE_COMPRESSED_ZSTD_BLOB_START`).
pub const OP_COMPRESSED_ZSTD_BLOB_START: u8 = 201;
/// Dragonfly: an LZ4 frame `pu(len) bytes` re-parsed as top-level items
/// (`RDB_OPCODE_COMPRESSED_LZ4_BLOB_START`).
pub const OP_COMPRESSED_LZ4_BLOB_START: u8 = 202;
/// Dragonfly: virtual end of a decompressed blob; never on the wire
/// (`RDB_OPCODE_COMPRESSED_BLOB_END`).
pub const OP_COMPRESSED_BLOB_END: u8 = 203;
/// Dragonfly: `pu(count)` then `count × str(journal item)` (`RDB_OPCODE_JOURNAL_BLOB`).
pub const OP_JOURNAL_BLOB: u8 = 210;
/// Dragonfly: `u64le` next LSN of the shard (`RDB_OPCODE_JOURNAL_OFFSET`).
pub const OP_JOURNAL_OFFSET: u8 = 211;
/// Dragonfly: `u32le flags [u32le memcache flags]` for the next key (`RDB_OPCODE_DF_MASK`).
pub const OP_DF_MASK: u8 = 220;
/// Dragonfly: HNSW vector index (`RDB_OPCODE_VECTOR_INDEX`), skipped (§3.6.12).
pub const OP_VECTOR_INDEX: u8 = 222;
/// Dragonfly: shard document index (`RDB_OPCODE_SHARD_DOC_INDEX`), skipped (§3.6.12).
pub const OP_SHARD_DOC_INDEX: u8 = 223;
/// Dragonfly: `u32le id, u32le len, payload` piece of a split value (`RDB_OPCODE_TAGGED_CHUNK`).
pub const OP_TAGGED_CHUNK: u8 = 224;
/// Redis 7: `pu(slot) pu(slot size) pu(expires slot size)` (`RDB_OPCODE_SLOT_INFO`).
pub const OP_SLOT_INFO: u8 = 244;
/// Redis 7: `str(library code)` (`RDB_OPCODE_FUNCTION2`).
pub const OP_FUNCTION2: u8 = 245;
/// Redis 7.0 release candidates: old function format (`RDB_OPCODE_FUNCTION_PRE_GA`); rejected.
pub const OP_FUNCTION_PRE_GA: u8 = 246;
/// Module auxiliary data: `pu(module id) pu(when opcode) pu(when)` then module opcodes
/// (`RDB_OPCODE_MODULE_AUX`); skipped.
pub const OP_MODULE_AUX: u8 = 247;
/// LRU idle time `pu(seconds)` for the next key (`RDB_OPCODE_IDLE`); ignored.
pub const OP_IDLE: u8 = 248;
/// LFU frequency, 1 byte, for the next key (`RDB_OPCODE_FREQ`); ignored.
pub const OP_FREQ: u8 = 249;
/// `str(name) str(value)` (`RDB_OPCODE_AUX`).
pub const OP_AUX: u8 = 250;
/// `pu(db size) pu(expires size)` (`RDB_OPCODE_RESIZEDB`).
pub const OP_RESIZEDB: u8 = 251;
/// `u64le` absolute expiry in ms for the next key (`RDB_OPCODE_EXPIRETIME_MS`).
pub const OP_EXPIRETIME_MS: u8 = 252;
/// `u32le` absolute expiry in seconds for the next key (`RDB_OPCODE_EXPIRETIME`).
pub const OP_EXPIRETIME: u8 = 253;
/// `pu(db)` (`RDB_OPCODE_SELECTDB`).
pub const OP_SELECTDB: u8 = 254;
/// End of the RDB body, then an 8-byte checksum (`RDB_OPCODE_EOF`).
pub const OP_EOF: u8 = 255;

/// Bytes after FULLSYNC_END (all zero, skipped).
pub const FULLSYNC_END_PADDING: usize = 8;
/// Length of a flow's eof token (§3.10).
pub const EOF_TOKEN_LEN: usize = 40;
/// The magic at the start of every RDB stream (then 4 ASCII digits of the version).
pub const RDB_MAGIC: &[u8; 5] = b"REDIS";

// ---------------------------------------------------------------------------------------------
// DF_MASK bits (§3.5; Dragonfly `rdb_extensions.h`).
// ---------------------------------------------------------------------------------------------

/// DF_MASK bit 0: the key is sticky (never evicted).
pub const DF_MASK_FLAG_STICKY: u32 = 1;
/// DF_MASK bit 1: a u32le memcached client-flags value follows.
pub const DF_MASK_FLAG_MC_FLAGS: u32 = 2;

// ---------------------------------------------------------------------------------------------
// Length and string encodings (§3.2).
// ---------------------------------------------------------------------------------------------

/// Top two bits `00`: 6-bit length in the same byte.
pub const LEN_6BIT: u8 = 0;
/// Top two bits `01`: 14-bit big-endian length over two bytes.
pub const LEN_14BIT: u8 = 1;
/// First byte `80`: 32-bit big-endian length follows.
pub const LEN_32BIT: u8 = 0x80;
/// First byte `81`: 64-bit big-endian length follows.
pub const LEN_64BIT: u8 = 0x81;
/// Top two bits `11`: a special string encoding, the low 6 bits say which.
pub const LEN_ENCVAL: u8 = 3;
/// String encoding: `i8`.
pub const ENC_INT8: u8 = 0;
/// String encoding: `i16le`.
pub const ENC_INT16: u8 = 1;
/// String encoding: `i32le`.
pub const ENC_INT32: u8 = 2;
/// String encoding: `pu(clen) pu(ulen) lzf[clen]`.
pub const ENC_LZF: u8 = 3;

// ---------------------------------------------------------------------------------------------
// Quicklist 2 node containers (Redis `quicklist.h`).
// ---------------------------------------------------------------------------------------------

/// One element stored as is.
pub const QUICKLIST_NODE_CONTAINER_PLAIN: u64 = 1;
/// A listpack holding several elements.
pub const QUICKLIST_NODE_CONTAINER_PACKED: u64 = 2;

// ---------------------------------------------------------------------------------------------
// Module value opcodes (Redis `rdb.h`, `RDB_MODULE_OPCODE_*`).
// ---------------------------------------------------------------------------------------------

/// End of a module value.
pub const MODULE_OPCODE_EOF: u64 = 0;
/// Signed integer `pu`.
pub const MODULE_OPCODE_SINT: u64 = 1;
/// Unsigned integer `pu`.
pub const MODULE_OPCODE_UINT: u64 = 2;
/// 4-byte float.
pub const MODULE_OPCODE_FLOAT: u64 = 3;
/// 8-byte double.
pub const MODULE_OPCODE_DOUBLE: u64 = 4;
/// RDB string.
pub const MODULE_OPCODE_STRING: u64 = 5;

// ---------------------------------------------------------------------------------------------
// Listpack (Redis `listpack.c`).
// ---------------------------------------------------------------------------------------------

/// Listpack header: u32le total bytes + u16le element count.
pub const LP_HDR_SIZE: usize = 6;
/// Element count value meaning "unknown, count them".
pub const LP_HDR_NUMELE_UNKNOWN: u16 = 0xFFFF;
/// End-of-listpack byte.
pub const LP_EOF: u8 = 0xFF;
/// `0xxxxxxx`: 7-bit unsigned integer.
pub const LP_ENCODING_7BIT_UINT_MASK: u8 = 0x80;
/// `10xxxxxx`: string of up to 63 bytes.
pub const LP_ENCODING_6BIT_STR: u8 = 0x80;
/// `110xxxxx yyyyyyyy`: 13-bit signed integer.
pub const LP_ENCODING_13BIT_INT: u8 = 0xC0;
/// `1110xxxx yyyyyyyy`: string of up to 4095 bytes.
pub const LP_ENCODING_12BIT_STR: u8 = 0xE0;
/// `F0` + u32le length: long string.
pub const LP_ENCODING_32BIT_STR: u8 = 0xF0;
/// `F1` + i16le.
pub const LP_ENCODING_16BIT_INT: u8 = 0xF1;
/// `F2` + i24le.
pub const LP_ENCODING_24BIT_INT: u8 = 0xF2;
/// `F3` + i32le.
pub const LP_ENCODING_32BIT_INT: u8 = 0xF3;
/// `F4` + i64le.
pub const LP_ENCODING_64BIT_INT: u8 = 0xF4;

// ---------------------------------------------------------------------------------------------
// Ziplist (Redis `ziplist.c`).
// ---------------------------------------------------------------------------------------------

/// Ziplist header: u32le zlbytes, u32le zltail, u16le zllen.
pub const ZIPLIST_HEADER_SIZE: usize = 10;
/// End-of-ziplist byte.
pub const ZIP_END: u8 = 0xFF;
/// A prevlen of this value is followed by a u32le.
pub const ZIP_BIG_PREVLEN: u8 = 0xFE;
/// `00pppppp`: string up to 63 bytes.
pub const ZIP_STR_06B: u8 = 0x00;
/// `01pppppp qqqqqqqq`: string up to 16383 bytes (big-endian 14 bits).
pub const ZIP_STR_14B: u8 = 0x40;
/// `10000000` + u32be length.
pub const ZIP_STR_32B: u8 = 0x80;
/// `11000000` + i16le.
pub const ZIP_INT_16B: u8 = 0xC0;
/// `11010000` + i32le.
pub const ZIP_INT_32B: u8 = 0xD0;
/// `11100000` + i64le.
pub const ZIP_INT_64B: u8 = 0xE0;
/// `11110000` + i24le.
pub const ZIP_INT_24B: u8 = 0xF0;
/// `11111110` + i8.
pub const ZIP_INT_8B: u8 = 0xFE;
/// `1111xxxx` with xxxx in 0001..1101: immediate 0..12 (xxxx − 1).
pub const ZIP_INT_IMM_MIN: u8 = 0xF1;
/// Largest immediate-integer encoding byte.
pub const ZIP_INT_IMM_MAX: u8 = 0xFD;

// ---------------------------------------------------------------------------------------------
// Zipmap (Redis `zipmap.c`).
// ---------------------------------------------------------------------------------------------

/// A zipmap length byte of this value is followed by a u32le length.
pub const ZIPMAP_BIGLEN: u8 = 254;
/// End of zipmap.
pub const ZIPMAP_END: u8 = 255;

// ---------------------------------------------------------------------------------------------
// Stream listpack entries (Redis `t_stream.c`).
// ---------------------------------------------------------------------------------------------

/// Entry flag: deleted (tombstone kept in the listpack).
pub const STREAM_ITEM_FLAG_DELETED: i64 = 1;
/// Entry flag: same fields as the master entry (field names omitted).
pub const STREAM_ITEM_FLAG_SAMEFIELDS: i64 = 2;
/// Length of a stream listpack's master-id key (u64be ms, u64be seq).
pub const STREAM_ID_LEN: usize = 16;

// ---------------------------------------------------------------------------------------------
// Text double special lengths (`RDB_TYPE_ZSET` scores; Redis `rdbLoadDoubleValue`).
// ---------------------------------------------------------------------------------------------

/// Text double length byte meaning −inf.
pub const TEXT_DOUBLE_NEG_INF: u8 = 255;
/// Text double length byte meaning +inf.
pub const TEXT_DOUBLE_POS_INF: u8 = 254;
/// Text double length byte meaning NaN.
pub const TEXT_DOUBLE_NAN: u8 = 253;

/// Human name of an object type byte, for errors and the inspector.
pub fn type_name(t: u8) -> &'static str {
    match t {
        TYPE_STRING => "string",
        TYPE_LIST => "list",
        TYPE_SET => "set",
        TYPE_ZSET => "zset",
        TYPE_HASH => "hash",
        TYPE_ZSET_2 => "zset2",
        TYPE_MODULE_PRE_GA => "module-pre-ga",
        TYPE_MODULE_2 => "module2",
        TYPE_HASH_ZIPMAP => "hash-zipmap",
        TYPE_LIST_ZIPLIST => "list-ziplist",
        TYPE_SET_INTSET => "set-intset",
        TYPE_ZSET_ZIPLIST => "zset-ziplist",
        TYPE_HASH_ZIPLIST => "hash-ziplist",
        TYPE_LIST_QUICKLIST => "list-quicklist",
        TYPE_STREAM_LISTPACKS => "stream-listpacks",
        TYPE_HASH_LISTPACK => "hash-listpack",
        TYPE_ZSET_LISTPACK => "zset-listpack",
        TYPE_LIST_QUICKLIST_2 => "list-quicklist2",
        TYPE_STREAM_LISTPACKS_2 => "stream-listpacks2",
        TYPE_SET_LISTPACK => "set-listpack-or-json-old",
        TYPE_STREAM_LISTPACKS_3 => "stream-listpacks3",
        TYPE_HASH_METADATA_PRE_GA => "hash-metadata-pre-ga",
        TYPE_HASH_LISTPACK_EX_PRE_GA => "hash-listpack-ex-pre-ga",
        TYPE_HASH_METADATA => "hash-metadata",
        TYPE_HASH_LISTPACK_EX => "hash-listpack-ex",
        TYPE_JSON => "json",
        TYPE_HASH_WITH_EXPIRY => "hash-with-expiry",
        TYPE_SET_WITH_EXPIRY => "set-with-expiry",
        TYPE_SBF => "sbf",
        TYPE_SBF2 => "sbf2",
        TYPE_CMS => "cms",
        TYPE_TOPK => "topk",
        TYPE_CUCKOO => "cuckoo",
        _ => "unknown",
    }
}

/// True for a byte that is an object type this decoder decodes (§3.4: 0–5, 7, 9–21, 30–37).
/// Types 6 (pre-GA modules) and 22–25 (Redis 7.4 field-TTL hashes) are known but rejected
/// with [`crate::wire::ErrorKind::UnsupportedType`].
pub fn is_known_type(t: u8) -> bool {
    matches!(t, 0..=5 | 7 | 9..=21 | 30..=37)
}
