//! Per-type value decoding: the value header, then elements in bounded batches (§3.6).
