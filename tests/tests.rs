//! The one integration test binary: a module per area, real servers started by `support`.

mod support;

mod check;
mod cli;
mod cluster;
mod cluster_replicate;
mod cluster_scenarios;
mod cluster_split;
mod config;
mod dbmap;
mod emulator;
mod journal;
mod net;
mod ops;
mod rdb;
mod recordings;
mod remote_input;
mod replicate;
mod resp;
mod rewrite;
mod troubleshooting;
mod writer;
