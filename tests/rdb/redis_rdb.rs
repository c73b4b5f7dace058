//! Real Redis 7 RDB files and DUMP payloads (filled in below).
