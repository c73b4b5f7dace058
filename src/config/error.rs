//! Configuration errors: what went wrong, in which file, at which key path, with which value.
//!
//! One load reports every problem it found, not just the first, so a user fixes a config file in
//! one pass. A [`Problem`] never carries the value of a secret (passwords): the resolver passes
//! `None` for those.

use std::fmt;
use std::io;

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub struct Error {
    origin: String,
    kind: ErrorKind,
}

/// The class of a configuration error.
#[derive(Debug)]
pub enum ErrorKind {
    /// The file could not be read (missing, unreadable, too large).
    Read(io::Error),
    /// The text is not valid YAML; the message carries serde_yaml's line and column.
    Syntax(String),
    /// The YAML parsed, but one or more keys or values are wrong.
    Invalid(Vec<Problem>),
}

/// One invalid key or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `target.seeds[1]`; empty for the document root.
    pub key: String,
    /// The offending value as written (escaped, shortened); `None` for secrets and absent keys.
    pub value: Option<String>,
    /// Why it is wrong, as a sentence fragment.
    pub reason: String,
}

impl Error {
    pub(crate) fn new(origin: &str, kind: ErrorKind) -> Error {
        Error {
            origin: origin.to_string(),
            kind,
        }
    }

    /// Where the configuration came from (a file path, or the name given to
    /// [`super::Config::from_yaml_str`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The class of error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The invalid keys and values; empty for read and syntax errors.
    pub fn problems(&self) -> &[Problem] {
        match &self.kind {
            ErrorKind::Invalid(p) => p,
            _ => &[],
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() {
            "(document)"
        } else {
            &self.key
        };
        match &self.value {
            Some(v) => write!(f, "{key} = {v}: {}", self.reason),
            None => write!(f, "{key}: {}", self.reason),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Read(e) => write!(f, "cannot read config file {}: {e}", self.origin),
            ErrorKind::Syntax(m) => write!(f, "config {} is not valid YAML: {m}", self.origin),
            ErrorKind::Invalid(problems) => match problems.as_slice() {
                [one] => write!(f, "config {}: {one}", self.origin),
                many => {
                    write!(f, "config {} has {} problems:", self.origin, many.len())?;
                    for p in many {
                        write!(f, "\n  - {p}")?;
                    }
                    Ok(())
                }
            },
        }
    }
}

/// No `source()`: the io::Error text is already part of `Display`, and returning it as the
/// source too would make the CLI's error chain print it twice.
impl std::error::Error for Error {}
