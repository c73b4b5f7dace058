//! Blocking TCP and TLS connections with timeouts, keepalive and AUTH, shared by source and
//! target.

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
