//! Connection errors: which address, in which phase, and why, readable as one sentence, e.g.
//! `127.0.0.1:6380: TLS handshake failed: certificate verify failed: ...`.

use std::fmt;
use std::io;

use crate::resp;

/// The step a connection was in when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Turning `host:port` into socket addresses.
    Resolve,
    /// Establishing TCP.
    Connect,
    /// Building the TLS configuration (reading CA, certificate and key files).
    TlsSetup,
    /// The TLS handshake.
    TlsHandshake,
    /// `AUTH`.
    Auth,
    /// Writing a request.
    Write,
    /// Reading a reply or stream bytes.
    Read,
    /// The server answered a request with an error reply.
    Reply,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Resolve => "resolving the address",
            Phase::Connect => "connect",
            Phase::TlsSetup => "TLS setup",
            Phase::TlsHandshake => "TLS handshake",
            Phase::Auth => "AUTH",
            Phase::Write => "write",
            Phase::Read => "read",
            Phase::Reply => "request",
        })
    }
}

/// Why it failed.
#[derive(Debug)]
pub enum Cause {
    /// An operating-system I/O error.
    Io(io::Error),
    /// A connect, read or write timeout expired.
    TimedOut,
    /// The peer closed the connection.
    Closed,
    /// A TLS problem, already phrased for a human (certificate verification, bad files).
    Tls(String),
    /// The endpoint settings cannot work (e.g. a certificate without a key).
    Config(String),
    /// The peer sent bytes that are not RESP.
    Protocol(resp::DecodeError),
    /// The server answered with an error reply.
    Server(resp::ServerError),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Io(e) => write!(f, "{e}"),
            Cause::TimedOut => f.write_str("timed out"),
            Cause::Closed => f.write_str("connection closed by peer"),
            Cause::Tls(s) | Cause::Config(s) => f.write_str(s),
            Cause::Protocol(e) => write!(f, "{e}"),
            Cause::Server(e) => write!(f, "server replied: {e}"),
        }
    }
}

/// A connection failure.
#[derive(Debug)]
pub struct Error {
    /// `host:port` of the server.
    pub addr: String,
    /// The phase that failed.
    pub phase: Phase,
    /// What went wrong.
    pub cause: Cause,
}

impl Error {
    pub(crate) fn new(addr: &str, phase: Phase, cause: Cause) -> Error {
        Error {
            addr: addr.to_string(),
            phase,
            cause,
        }
    }

    /// Wraps an I/O error, recognising timeouts and closed connections.
    pub(crate) fn io(addr: &str, phase: Phase, e: io::Error) -> Error {
        let cause = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Cause::TimedOut,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Cause::Closed,
            _ => Cause::Io(e),
        };
        Error::new(addr, phase, cause)
    }

    /// The server's error reply, when that is the cause.
    pub fn server_error(&self) -> Option<&resp::ServerError> {
        match &self.cause {
            Cause::Server(e) => Some(e),
            _ => None,
        }
    }

    /// True when the server refused the credentials (or asked for some).
    pub fn is_auth(&self) -> bool {
        self.phase == Phase::Auth
            || matches!(&self.cause, Cause::Server(e) if e.kind == resp::ErrorKind::Auth)
    }

    /// True when a timeout expired.
    pub fn is_timeout(&self) -> bool {
        matches!(self.cause, Cause::TimedOut)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} failed: {}", self.addr, self.phase, self.cause)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Io(e) => Some(e),
            Cause::Protocol(e) => Some(e),
            Cause::Server(e) => Some(e),
            _ => None,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;
