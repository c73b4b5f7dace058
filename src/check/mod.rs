//! Read-only consistency checker: compares a source and a target keyspace.
