//! Server error replies sorted by what the caller does next, decided once here so that no
//! other module matches on error text.
//!
//! The classification follows the first word of the error line, the way Redis documents its
//! error prefixes (and the way redis-rs's `RetryMethod` sorts them): `MOVED`, `ASK`,
//! `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `BUSY`, `NOAUTH`/`WRONGPASS`/`NOPERM`, `OOM`,
//! `READONLY`. A few authentication failures that older servers report as `ERR ...` are
//! recognised by their text.

use std::fmt;

/// The kind of a server error, by cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// `MOVED <slot> <host:port>`: the slot lives on another node for good. The address may
    /// have an empty host (`:7001`), meaning "the host of the node that replied".
    Moved {
        /// The slot of the command's key.
        slot: u16,
        /// `host:port` of the node that owns it now.
        addr: String,
    },
    /// `ASK <slot> <host:port>`: the slot is migrating; send `ASKING` + the command there once.
    Ask {
        /// The slot of the command's key.
        slot: u16,
        /// `host:port` of the importing node.
        addr: String,
    },
    /// `TRYAGAIN`: multi-key command during a slot migration.
    TryAgain,
    /// `CLUSTERDOWN`: the cluster cannot serve this slot right now.
    ClusterDown,
    /// `LOADING`: the server is loading its dataset.
    Loading,
    /// `BUSY`: a script or function is running.
    Busy,
    /// `NOAUTH`, `WRONGPASS`, `NOPERM` and `ERR` authentication failures.
    Auth,
    /// `OOM`: over `maxmemory`.
    Oom,
    /// `READONLY`: the node is (now) a replica.
    ReadOnly,
    /// Anything else (`ERR`, `WRONGTYPE`, `BUSYKEY`, ...): the command itself was refused.
    Other,
}

/// What the caller should do with the command that got the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAction {
    /// Update the slot map and resend to the node named in the error (`MOVED`).
    Redirect,
    /// Send `ASKING` then the command, once, to the node named in the error (`ASK`).
    AskRedirect,
    /// Wait a little and resend to the same node (`TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `BUSY`).
    RetryLater,
    /// The node stopped being a master: rediscover the topology, then resend (`READONLY`).
    RefreshTopology,
    /// Stop: retrying cannot help until an operator acts (authentication, out of memory).
    Fatal,
    /// This command was refused; retrying the same command gets the same answer.
    CommandFailed,
}

impl ErrorKind {
    /// The next action for this kind of error.
    pub fn next_action(&self) -> NextAction {
        match self {
            ErrorKind::Moved { .. } => NextAction::Redirect,
            ErrorKind::Ask { .. } => NextAction::AskRedirect,
            ErrorKind::TryAgain | ErrorKind::ClusterDown | ErrorKind::Loading | ErrorKind::Busy => {
                NextAction::RetryLater
            }
            ErrorKind::ReadOnly => NextAction::RefreshTopology,
            ErrorKind::Auth | ErrorKind::Oom => NextAction::Fatal,
            ErrorKind::Other => NextAction::CommandFailed,
        }
    }
}

/// One error reply from a server: its kind and its text (lossily decoded, for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// Classified kind.
    pub kind: ErrorKind,
    /// The whole error line without the leading `-`, e.g. `WRONGPASS invalid username...`.
    pub message: String,
}

impl ServerError {
    /// Classifies an error line (without the leading `-` or `!`).
    pub fn parse(line: &[u8]) -> ServerError {
        let message = String::from_utf8_lossy(line).into_owned();
        let kind = classify(&message);
        ServerError { kind, message }
    }

    /// Shortcut for `self.kind.next_action()`.
    pub fn next_action(&self) -> NextAction {
        self.kind.next_action()
    }

    /// A redirect or a retry-later answer (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`,
    /// `LOADING`, `BUSY`, `READONLY`): the cluster is moving, and the same request can succeed
    /// later or on another node.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.next_action(),
            NextAction::Redirect
                | NextAction::AskRedirect
                | NextAction::RetryLater
                | NextAction::RefreshTopology
        )
    }

    /// The error code: the first word (`ERR`, `MOVED`, `WRONGTYPE`, ...).
    pub fn code(&self) -> &str {
        self.message.split(' ').next().unwrap_or("")
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

fn classify(msg: &str) -> ErrorKind {
    let mut words = msg.split(' ');
    let code = words.next().unwrap_or("");
    match code {
        "MOVED" | "ASK" => match redirect(words.next(), words.next()) {
            Some((slot, addr)) if code == "MOVED" => ErrorKind::Moved { slot, addr },
            Some((slot, addr)) => ErrorKind::Ask { slot, addr },
            // A redirect we cannot follow is just a failed command.
            None => ErrorKind::Other,
        },
        "TRYAGAIN" => ErrorKind::TryAgain,
        "CLUSTERDOWN" => ErrorKind::ClusterDown,
        "LOADING" => ErrorKind::Loading,
        "BUSY" => ErrorKind::Busy,
        "NOAUTH" | "WRONGPASS" | "NOPERM" => ErrorKind::Auth,
        "OOM" => ErrorKind::Oom,
        "READONLY" => ErrorKind::ReadOnly,
        "ERR" if is_auth_text(msg) => ErrorKind::Auth,
        _ => ErrorKind::Other,
    }
}

fn redirect(slot: Option<&str>, addr: Option<&str>) -> Option<(u16, String)> {
    let slot: u16 = slot?.parse().ok()?;
    let addr = addr?;
    if slot >= 16384 || !addr.contains(':') {
        return None;
    }
    Some((slot, addr.to_string()))
}

/// `ERR` texts that mean the credentials are wrong or missing: Redis before 6 (`invalid
/// password`), Redis 6+ `AUTH` sent without `requirepass` configured, and Dragonfly/Redis
/// "Authentication required" wording behind an `ERR` prefix.
fn is_auth_text(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("invalid password")
        || m.contains("invalid username-password")
        || m.contains("without any password configured")
        || m.contains("authentication required")
        || m.contains("-noauth")
        || m.contains("-wrongpass")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_redirects_and_retry_later_answers() {
        for line in [
            "MOVED 1 127.0.0.1:1",
            "ASK 1 127.0.0.1:1",
            "TRYAGAIN x",
            "CLUSTERDOWN x",
            "LOADING x",
            "BUSY x",
            "READONLY x",
        ] {
            assert!(ServerError::parse(line.as_bytes()).is_transient(), "{line}");
        }
        for line in ["WRONGTYPE x", "OOM x", "NOAUTH x", "ERR x"] {
            assert!(
                !ServerError::parse(line.as_bytes()).is_transient(),
                "{line}"
            );
        }
    }

    fn kind(s: &str) -> ErrorKind {
        ServerError::parse(s.as_bytes()).kind
    }

    #[test]
    fn classification_table() {
        let table: &[(&str, ErrorKind, NextAction)] = &[
            (
                "MOVED 3999 127.0.0.1:6381",
                ErrorKind::Moved {
                    slot: 3999,
                    addr: "127.0.0.1:6381".into(),
                },
                NextAction::Redirect,
            ),
            (
                "ASK 0 :7002",
                ErrorKind::Ask {
                    slot: 0,
                    addr: ":7002".into(),
                },
                NextAction::AskRedirect,
            ),
            (
                "MOVED 99999 h:1",
                ErrorKind::Other,
                NextAction::CommandFailed,
            ),
            ("MOVED x", ErrorKind::Other, NextAction::CommandFailed),
            (
                "TRYAGAIN Multiple keys request during rehashing of slot",
                ErrorKind::TryAgain,
                NextAction::RetryLater,
            ),
            (
                "CLUSTERDOWN The cluster is down",
                ErrorKind::ClusterDown,
                NextAction::RetryLater,
            ),
            (
                "LOADING Redis is loading the dataset in memory",
                ErrorKind::Loading,
                NextAction::RetryLater,
            ),
            (
                "BUSY Redis is busy running a script.",
                ErrorKind::Busy,
                NextAction::RetryLater,
            ),
            (
                "BUSYKEY Target key name already exists.",
                ErrorKind::Other,
                NextAction::CommandFailed,
            ),
            (
                "NOAUTH Authentication required.",
                ErrorKind::Auth,
                NextAction::Fatal,
            ),
            (
                "WRONGPASS invalid username-password pair or user is disabled.",
                ErrorKind::Auth,
                NextAction::Fatal,
            ),
            (
                "NOPERM User u has no permissions to run the 'set' command",
                ErrorKind::Auth,
                NextAction::Fatal,
            ),
            ("ERR invalid password", ErrorKind::Auth, NextAction::Fatal),
            (
                "ERR AUTH <password> called without any password configured for the default user.",
                ErrorKind::Auth,
                NextAction::Fatal,
            ),
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                ErrorKind::Oom,
                NextAction::Fatal,
            ),
            (
                "READONLY You can't write against a read only replica.",
                ErrorKind::ReadOnly,
                NextAction::RefreshTopology,
            ),
            (
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                ErrorKind::Other,
                NextAction::CommandFailed,
            ),
            (
                "ERR syntax error",
                ErrorKind::Other,
                NextAction::CommandFailed,
            ),
            ("", ErrorKind::Other, NextAction::CommandFailed),
        ];
        for (line, k, a) in table {
            assert_eq!(&kind(line), k, "{line}");
            assert_eq!(k.next_action(), *a, "{line}");
        }
        assert_eq!(ServerError::parse(b"ERR x").code(), "ERR");
    }
}
