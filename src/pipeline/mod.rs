//! The only place threads and channels are created: flows, writers, coordinator, shutdown.
