//! Integration tests: rdb.
