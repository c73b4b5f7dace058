//! Integration tests: resp.
