//! The replica side of Dragonfly's replication handshake and the per-flow read loop.
