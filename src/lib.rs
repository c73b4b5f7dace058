//! df2redis-sync moves a live Dragonfly database into Redis or Redis Cluster by attaching to
//! Dragonfly as a replica.
//!
//! Read the modules in the order a byte travels:
//!
//! 1. [`net`] opens blocking TCP/TLS connections (source and target alike).
//! 2. [`source`] speaks the replica side of Dragonfly's protocol on the main connection and one
//!    flow connection per shard.
//! 3. [`wire`] holds checked primitive reads; [`rdb`] decodes the full-sync snapshot and
//!    [`journal`] the live journal. Both are sans-IO: bytes in, entries and bytes consumed out.
//! 4. [`rewrite`] turns decoded entries into owned Redis commands ([`model::Cmd`]).
//! 5. [`route`] maps keys to cluster slots; [`pipeline`] owns every thread and channel; the
//!    coordinator there tracks per-flow LSNs and [`checkpoint`] saves them.
//! 6. [`target`] pipelines RESP ([`resp`]) into Redis nodes and classifies their errors.
//! 7. [`check`] compares source and target; [`config`] loads the YAML; [`cli`] is the only
//!    place that prints.
//!
//! [`emulator`] is a Dragonfly *master* used by tests, benchmarks and the demo; the replica code
//! never calls into it.
//!
//! See `docs/ARCHITECTURE.md` for threads, data flow and invariants.

pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod journal;
pub mod model;
pub mod net;
pub mod ops;
pub mod pipeline;
pub mod rdb;
pub mod resp;
pub mod rewrite;
pub mod route;
pub mod source;
pub mod target;
pub mod wire;
