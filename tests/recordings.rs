//! Integration tests: recordings.
