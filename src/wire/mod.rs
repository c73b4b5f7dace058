//! Checked primitive reads over untrusted bytes, with caps on every length.
