//! Redis target connections, topology discovery and pipelined writers.
//!
//! [`topology`] finds the nodes (standalone: one); [`writer`] runs one node's pipelined writer
//! (mio, bounded in-flight window, `SELECT` per db, marker keys committed with each journal
//! batch, errors sorted by the next action).

pub mod topology;
pub mod writer;
