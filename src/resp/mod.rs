//! RESP reply decoding and Redis error classification.
