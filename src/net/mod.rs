//! Blocking TCP and TLS connections with timeouts, keepalive and AUTH, shared by source and
//! target.
//!
//! [`Endpoint`] says where and how to connect; [`Conn::connect`] resolves, connects with a
//! timeout, sets `TCP_NODELAY` and keepalive, runs the TLS handshake (rustls with the ring
//! provider) and authenticates. A [`Conn`] then sends [`crate::model::Cmd`]s and reads
//! [`crate::resp::Value`] replies through one read buffer; bytes that arrived behind a reply
//! stay in that buffer and are served first by `Conn`'s [`std::io::Read`], so a Dragonfly flow
//! can switch from replies to the raw snapshot stream without losing any. Every failure is an
//! [`Error`] naming the address, the phase and the cause; passwords never appear in errors,
//! logs or `Debug` output.

mod conn;
mod error;
mod tls;

pub use conn::{Conn, Stream};
pub use error::{Cause, Error, Phase};

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A secret (password). Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it (AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// TLS settings for one side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) to trust; `None` = the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against (SNI); default: the host part of `addr`.
    pub server_name: Option<String>,
    /// Accept any server certificate. Dangerous; logged loudly when set.
    pub insecure_skip_verify: bool,
}

/// Where and how to connect: one Redis or Dragonfly server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// ACL user name (`AUTH user pass`); `None` = `AUTH pass` or no AUTH.
    pub username: Option<String>,
    /// Password; `None` = no AUTH.
    pub password: Option<Secret>,
    /// TLS settings; `None` = plain TCP.
    pub tls: Option<TlsOptions>,
    /// Limit on establishing TCP (and the TLS handshake).
    pub connect_timeout: Duration,
    /// Limit on one blocking read or write; `None` = wait forever.
    pub io_timeout: Option<Duration>,
}

impl Endpoint {
    /// The host part of `addr` (brackets of an IPv6 literal removed).
    pub fn host(&self) -> &str {
        host_of(&self.addr)
    }

    /// A copy of this endpoint (credentials, TLS, timeouts) pointing at another address, e.g.
    /// another node of the same cluster.
    pub fn with_addr(&self, addr: impl Into<String>) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            ..self.clone()
        }
    }

    /// A plain, unauthenticated endpoint with default timeouts (5 s connect, 30 s I/O).
    pub fn plain(addr: impl Into<String>) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            username: None,
            password: None,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// The host part of a `host:port` address; `[v6]:port` gives `v6`. An address without a port
/// is returned whole.
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Joins a host and port into an address, bracketing IPv6 literals.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing() {
        assert_eq!(host_of("127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6379"), "::1");
        assert_eq!(host_of("redis.local"), "redis.local");
        assert_eq!(join_host_port("::1", 7), "[::1]:7");
        assert_eq!(join_host_port("h", 7), "h:7");
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let mut e = Endpoint::plain("h:1");
        e.password = Some(Secret::new("hunter2"));
        e.username = Some("alice".into());
        let d = format!("{e:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("alice"));
    }
}
