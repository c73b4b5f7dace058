//! Failpoints: a few named places where a *debug* build can be made to fail on purpose, so the
//! tests can prove how the engine reports failures that no remote input can cause (a thread
//! panicking, the OS refusing a thread) — the message, a non-zero exit within a bound, and a
//! restart that resumes exactly.
//!
//! Armed by one environment variable, read once at the first check:
//! `DF2REDIS_SYNC_FAILPOINT=<name>[:<flow>]`. The names:
//!
//! * `flow-panic:N` — flow thread `N` panics at its first journal command in stable sync;
//! * `writer-panic` — a writer thread panics when it takes its first journal batch that
//!   carries commands;
//! * `coordinator-panic` — the coordinator panics once a journal batch was applied in stable
//!   sync;
//! * `spawn-error` — spawning the first flow thread fails as if the OS refused a thread.
//!
//! Each fires at most once per process. In a release build [`hit`] is an empty inline function
//! and the sites that need more than a call are compiled out (`#[cfg(debug_assertions)]`): no
//! cost and no way to arm them. The mechanism is for tests only and is documented in
//! docs/ARCHITECTURE.md (Testing), not in the operator docs.

/// The environment variable that arms a failpoint (debug builds only).
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub const ENV: &str = "DF2REDIS_SYNC_FAILPOINT";

#[cfg(debug_assertions)]
mod imp {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;

    /// The armed failpoint: name and optional flow number.
    static ARMED: OnceLock<Option<(String, Option<u32>)>> = OnceLock::new();
    /// Set when it fired.
    static FIRED: AtomicBool = AtomicBool::new(false);

    fn armed() -> Option<&'static (String, Option<u32>)> {
        ARMED
            .get_or_init(|| {
                let spec = std::env::var(super::ENV).ok()?;
                let (name, arg) = match spec.split_once(':') {
                    Some((n, a)) => (n.to_string(), a.parse::<u32>().ok()),
                    None => (spec, None),
                };
                Some((name, arg))
            })
            .as_ref()
    }

    pub fn hit(name: &str, arg: Option<u32>) -> bool {
        let Some((n, a)) = armed() else {
            return false;
        };
        if n != name || (a.is_some() && *a != arg) {
            return false;
        }
        !FIRED.swap(true, Ordering::SeqCst)
    }
}

/// True (once per process) when the failpoint `name` (for flow `arg`, when the failpoint names
/// one) is armed; the caller then fails the way the failpoint describes.
#[cfg(debug_assertions)]
pub fn hit(name: &str, arg: Option<u32>) -> bool {
    imp::hit(name, arg)
}

/// Release builds: never.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str, _arg: Option<u32>) -> bool {
    false
}

/// Panics with the failpoint's name when [`hit`] (the panic message names the caller's line).
/// Its call sites are debug-only, so a release build does not use it.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
#[inline(always)]
#[track_caller]
pub fn panic_if(name: &str, arg: Option<u32>) {
    if hit(name, arg) {
        panic!("failpoint {name} fired (a test armed {ENV})");
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn unarmed_never_fires() {
        // The test process does not set the variable (a failpoint test runs the binary).
        if std::env::var(ENV).is_err() {
            assert!(!hit("flow-panic", Some(0)));
            panic_if("coordinator-panic", None);
        }
    }
}
