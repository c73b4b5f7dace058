//! Versioned on-disk checkpoint of per-flow LSNs, saved atomically.
