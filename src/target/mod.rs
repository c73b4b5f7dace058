//! Redis target connections, topology discovery and pipelined writers.

pub mod topology;
