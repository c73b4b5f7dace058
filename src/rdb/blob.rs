//! Readers of the Redis blob formats found inside RDB strings (§3.6.10): listpack, ziplist,
//! intset and zipmap. Each takes a complete buffer and appends the elements it holds.
