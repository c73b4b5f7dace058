//! Integration tests: rewrite.
