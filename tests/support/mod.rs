//! Test fixtures: real redis-server processes on loopback, cleaned up on drop.
