//! A checked walk over the parsed YAML tree: sections with a fixed set of keys, typed leaves,
//! `${ENV}` expansion, and a problem list that names every key path.
//!
//! Why not `#[derive(Deserialize)]` with `deny_unknown_fields`: serde's errors do not carry the
//! key path (`target.seeds[1]`), cannot suggest the nearest known key, and stop at the first
//! problem. Walking a `serde_yaml::Value` keeps all three under our control, and expanding
//! `${ENV}` after parsing means an environment value can never inject YAML structure.

use super::error::Problem;
use serde_yaml::Value;
use std::time::Duration;

/// Longest value (in characters) quoted back in an error message.
const SHOW_MAX: usize = 60;

/// Collects problems and warnings while the resolver walks the tree.
pub(crate) struct Ctx<'e> {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    env: &'e dyn Fn(&str) -> Option<String>,
}

/// A YAML mapping whose keys were checked against the allowed set.
pub(crate) struct Section<'v> {
    path: String,
    entries: Vec<(String, &'v Value)>,
}

/// `path.key`, or `key` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'e> Ctx<'e> {
    pub fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Ctx<'e> {
        Ctx {
            problems: Vec::new(),
            warnings: Vec::new(),
            env,
        }
    }

    /// Records an invalid value. `value` is `None` for secrets and for missing keys.
    pub fn problem(&mut self, key: &str, value: Option<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            value,
            reason: reason.into(),
        });
    }

    /// Records a problem quoting a YAML value (shortened and escaped).
    pub fn bad(&mut self, key: &str, v: &Value, reason: impl Into<String>) {
        self.problem(key, Some(show(v)), reason);
    }

    /// Opens `v` as a section that may hold only `allowed` keys. A null value is an empty
    /// section; anything but a mapping is a problem (and `None`).
    pub fn section<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        allowed: &[&str],
    ) -> Option<Section<'v>> {
        let map = match v {
            Value::Null => {
                return Some(Section {
                    path: path.to_string(),
                    entries: Vec::new(),
                })
            }
            Value::Mapping(m) => m,
            Value::Tagged(t) => return self.section(path, &t.value, allowed),
            other => {
                self.bad(
                    path,
                    other,
                    format!("must be a map of keys ({})", allowed.join(", ")),
                );
                return None;
            }
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, val) in map {
            let Some(name) = k.as_str() else {
                self.bad(path, k, "keys of this section must be strings");
                continue;
            };
            if allowed.contains(&name) {
                entries.push((name.to_string(), val));
            } else {
                let reason = match suggest(name, allowed) {
                    Some(s) => format!("unknown key; did you mean `{s}`?"),
                    None => format!("unknown key; expected one of: {}", allowed.join(", ")),
                };
                self.problem(&join(path, &escape(name)), None, reason);
            }
        }
        Some(Section {
            path: path.to_string(),
            entries,
        })
    }

    /// Expands `${NAME}`, `${NAME:-default}` and the `$${` escape in a string found at `key`.
    /// An unset variable (without default) is a problem naming the key and the variable.
    pub fn expand(&mut self, key: &str, s: &str) -> Option<String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix("${") {
                // `$${` is a literal `${`.
                out.push_str("${");
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    self.problem(
                        key,
                        None,
                        "unterminated `${` (write `$${` for a literal `${`)",
                    );
                    return None;
                };
                let inner = &body[..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                if !valid_env_name(name) {
                    self.problem(
                        key,
                        None,
                        format!(
                            "`${{{}}}` is not a valid environment variable reference",
                            escape(name)
                        ),
                    );
                    return None;
                }
                match (self.env)(name) {
                    Some(v) => out.push_str(&v),
                    None => match default {
                        Some(d) => out.push_str(d),
                        None => {
                            self.problem(
                                key,
                                None,
                                format!("environment variable {name} is not set"),
                            );
                            return None;
                        }
                    },
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Some(out)
    }

    /// A string leaf. Numbers are accepted as their decimal text (YAML reads `password: 1234`
    /// as a number). `secret` keeps the value out of error messages.
    pub fn string(&mut self, key: &str, v: &Value, secret: bool) -> Option<String> {
        match v {
            Value::String(s) => self.expand(key, s),
            Value::Number(n) => Some(n.to_string()),
            Value::Tagged(t) => self.string(key, &t.value, secret),
            other => {
                let what = kind_name(other);
                if secret {
                    self.problem(key, None, format!("must be a string, not {what}"));
                } else {
                    self.bad(key, other, format!("must be a string, not {what}"));
                }
                None
            }
        }
    }

    /// A non-empty string leaf without spaces or control characters (a host name, an IP);
    /// `what` completes "must be …" in the error.
    pub fn word(&mut self, key: &str, v: &Value, what: &str) -> Option<String> {
        let w = self.string(key, v, false)?;
        if w.is_empty() || w.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.problem(key, Some(show_str(&w)), format!("must be {what}"));
            return None;
        }
        Some(w)
    }

    /// An unsigned integer leaf in `min..=max`; numeric strings (e.g. from `${ENV}`) count.
    pub fn uint(&mut self, key: &str, v: &Value, min: u64, max: u64) -> Option<u64> {
        let n = match v {
            Value::Number(n) => match n.as_u64() {
                Some(n) => n,
                None => {
                    self.bad(
                        key,
                        v,
                        format!("must be a whole number between {min} and {max}"),
                    );
                    return None;
                }
            },
            Value::String(s) => {
                let s = self.expand(key, s)?;
                match s.trim().parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => {
                        self.problem(
                            key,
                            Some(show_str(&s)),
                            format!("must be a whole number between {min} and {max}"),
                        );
                        return None;
                    }
                }
            }
            Value::Tagged(t) => return self.uint(key, &t.value, min, max),
            other => {
                self.bad(
                    key,
                    other,
                    format!("must be a whole number, not {}", kind_name(other)),
                );
                return None;
            }
        };
        if n < min || n > max {
            self.bad(key, v, format!("must be between {min} and {max}"));
            return None;
        }
        Some(n)
    }

    /// A boolean leaf: `true`/`false`, or the strings true/false/yes/no/on/off in any case
    /// (the Go tool accepted quoted booleans too).
    pub fn boolean(&mut self, key: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => {
                let s = self.expand(key, s)?;
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => Some(true),
                    "false" | "no" | "off" => Some(false),
                    _ => {
                        self.problem(key, Some(show_str(&s)), "must be true or false");
                        None
                    }
                }
            }
            Value::Tagged(t) => self.boolean(key, &t.value),
            other => {
                self.bad(key, other, "must be true or false");
                None
            }
        }
    }

    /// A duration leaf: `500ms`, `30s`, `5m`, `1h`, or a plain number of seconds; must lie in
    /// `min..=max`.
    pub fn duration(
        &mut self,
        key: &str,
        v: &Value,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => self.expand(key, s)?,
            Value::Tagged(t) => return self.duration(key, &t.value, min, max),
            other => {
                self.bad(
                    key,
                    other,
                    "must be a duration such as 500ms, 30s, 5m or a number of seconds",
                );
                return None;
            }
        };
        let d = match parse_duration(&text) {
            Ok(d) => d,
            Err(reason) => {
                self.problem(key, Some(show_str(&text)), reason);
                return None;
            }
        };
        if d < min || d > max {
            self.problem(
                key,
                Some(show_str(&text)),
                format!(
                    "must be between {} and {}",
                    fmt_duration(min),
                    fmt_duration(max)
                ),
            );
            return None;
        }
        Some(d)
    }

    /// A byte-size leaf: a number of bytes or `64KiB`, `1MiB`, `1MB`, `512k`…, in `min..=max`.
    pub fn size(&mut self, key: &str, v: &Value, min: u64, max: u64) -> Option<u64> {
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => self.expand(key, s)?,
            Value::Tagged(t) => return self.size(key, &t.value, min, max),
            other => {
                self.bad(key, other, "must be a size such as 65536, 64KiB or 1MiB");
                return None;
            }
        };
        let n = match parse_size(&text) {
            Ok(n) => n,
            Err(reason) => {
                self.problem(key, Some(show_str(&text)), reason);
                return None;
            }
        };
        if n < min || n > max {
            self.problem(
                key,
                Some(show_str(&text)),
                format!("must be between {} and {} bytes", min, max),
            );
            return None;
        }
        Some(n)
    }

    /// A list leaf: a YAML sequence, or a single scalar taken as a one-element list. Returns
    /// each element with its indexed key path (`key[0]`, `key[1]`, …).
    pub fn list<'v>(&mut self, key: &str, v: &'v Value) -> Option<Vec<(String, &'v Value)>> {
        match v {
            Value::Sequence(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (format!("{key}[{i}]"), item))
                    .collect(),
            ),
            Value::Tagged(t) => self.list(key, &t.value),
            Value::Mapping(_) => {
                self.bad(key, v, "must be a list");
                None
            }
            other => Some(vec![(key.to_string(), other)]),
        }
    }
}

impl<'v> Section<'v> {
    /// The section's own key path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The value under `key` and its full path; a YAML null counts as absent.
    pub fn get(&self, key: &str) -> Option<(String, &'v Value)> {
        self.entries
            .iter()
            .find(|(k, v)| k == key && !v.is_null())
            .map(|(k, v)| (join(&self.path, k), *v))
    }

    /// True when `key` is present (and not null).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// The closest allowed key to `name`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    let mut best: Option<(usize, &str)> = None;
    for &cand in allowed {
        let d = levenshtein(&lower, &cand.to_ascii_lowercase());
        if best.map_or(true, |(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    let (d, cand) = best?;
    // A third of the length, at least 1 and at most 3 edits, reads as a typo; more is a
    // different word and suggesting it would mislead.
    let limit = (name.chars().count() / 3).clamp(1, 3);
    (d <= limit).then_some(cand)
}

/// Edit distance (insert, delete, substitute), by characters.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `2d` or a plain number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let usage = "must be a duration such as 500ms, 30s, 5m, 1h or a number of seconds";
    let n: u64 = num.parse().map_err(|_| usage.to_string())?;
    let ms_per = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1_000,
        "ms" => 1,
        "m" | "min" | "mins" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(usage.to_string()),
    };
    let ms = n
        .checked_mul(ms_per)
        .ok_or_else(|| "duration is too long".to_string())?;
    Ok(Duration::from_millis(ms))
}

/// Parses a byte size: a plain number, or a number with k/KB/KiB, m/MB/MiB, g/GB/GiB (all
/// binary, powers of 1024, as memory sizes are meant here).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let usage = "must be a size such as 65536, 64KiB or 1MiB";
    let n: u64 = num.parse().map_err(|_| usage.to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(usage.to_string()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size is too large".to_string())
}

/// `1500ms` → "1500ms", `30s` → "30s", `300s` → "5m".
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A value as quoted in an error message: scalars in backticks, escaped and shortened;
/// collections by kind only.
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => show_str(s),
        Value::Number(n) => format!("`{n}`"),
        Value::Bool(b) => format!("`{b}`"),
        Value::Null => "`null`".to_string(),
        other => kind_name(other).to_string(),
    }
}

/// A string in backticks, control characters escaped, cut at [`SHOW_MAX`] characters.
pub(crate) fn show_str(s: &str) -> String {
    let mut e = escape(s);
    if e.chars().count() > SHOW_MAX {
        e = e.chars().take(SHOW_MAX).collect::<String>() + "…";
    }
    format!("`{e}`")
}

/// Escapes control characters so a value cannot mess up the terminal.
pub(crate) fn escape(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("addr", "adr"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("seeds", "seed"), 1);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let allowed = ["addr", "password", "username", "tls"];
        assert_eq!(suggest("pasword", &allowed), Some("password"));
        assert_eq!(suggest("Addr", &allowed), Some("addr"));
        assert_eq!(suggest("user-name", &allowed), Some("username"));
        assert_eq!(suggest("compression", &allowed), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(fmt_duration(Duration::from_secs(300)), "5m");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("1TB").is_err());
    }

    #[test]
    fn expansion() {
        let env = |n: &str| (n == "PW").then(|| "s3cret".to_string());
        let mut ctx = Ctx::new(&env);
        assert_eq!(ctx.expand("k", "a${PW}b").as_deref(), Some("as3cretb"));
        assert_eq!(ctx.expand("k", "$${PW}").as_deref(), Some("${PW}"));
        assert_eq!(ctx.expand("k", "cost $5").as_deref(), Some("cost $5"));
        assert_eq!(ctx.expand("k", "${NOPE:-dflt}").as_deref(), Some("dflt"));
        assert!(ctx.problems.is_empty());
        assert_eq!(ctx.expand("k", "${NOPE}"), None);
        assert_eq!(ctx.expand("k", "${oops"), None);
        assert_eq!(ctx.expand("k", "${1X}"), None);
        assert_eq!(ctx.problems.len(), 3);
        assert!(ctx.problems[0].reason.contains("NOPE is not set"));
        let mut ctx = Ctx::new(&no_env);
        assert_eq!(ctx.expand("k", "plain"), Some("plain".into()));
    }

    #[test]
    fn shown_values_are_escaped_and_short() {
        assert_eq!(show_str("a\nb"), "`a\\nb`");
        let long = "x".repeat(200);
        assert!(show_str(&long).chars().count() < 70);
    }
}
