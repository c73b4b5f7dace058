//! Redis target connections, topology discovery and pipelined writers.
//!
//! [`topology`] finds the nodes (standalone: one); [`writer`] runs one node's pipelined writer
//! (mio, bounded in-flight window, `SELECT` per db, marker keys committed with each journal
//! batch, errors sorted by the next action); [`cluster`] holds what a Redis Cluster target adds
//! (command routing by slot, per-slot position markers, the per-flow completion tracker).

pub mod cluster;
pub mod topology;
pub mod writer;
