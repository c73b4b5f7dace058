//! Small pure helpers of the checker: Redis glob matching, base64, UTC timestamps, a
//! deterministic sampling hash, a rate limiter shared by the workers of one side, and the
//! order-independent value digest used for small keys.

use parking_lot::Mutex;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Redis glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), the rules of Redis `util.c`
/// `stringmatchlen`, used where the server cannot filter (prefixed keys of a shared target db).
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Backtracking point for the last `*`: (pattern index after it, string index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            let c = pattern[p];
            if c == b'*' {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            if i < s.len() {
                let (ok, next) = match_one(pattern, p, s[i]);
                if ok {
                    p = next;
                    i += 1;
                    continue;
                }
            }
        } else if i == s.len() {
            return true;
        }
        match star {
            Some((sp, si)) if si < s.len() => {
                star = Some((sp, si + 1));
                p = sp;
                i = si + 1;
            }
            _ => return false,
        }
    }
}

/// Matches one pattern element at `pattern[p]` (not `*`) against byte `b`; returns whether it
/// matched and the index after the element.
fn match_one(pattern: &[u8], p: usize, b: u8) -> (bool, usize) {
    match pattern.get(p) {
        Some(b'?') => (true, p + 1),
        Some(b'\\') => match pattern.get(p + 1) {
            Some(&c) => (c == b, p + 2),
            None => (b == b'\\', p + 1),
        },
        Some(b'[') => {
            let mut j = p + 1;
            let negate = pattern.get(j) == Some(&b'^');
            if negate {
                j += 1;
            }
            let mut matched = false;
            loop {
                match pattern.get(j) {
                    None => break,
                    Some(b']') => {
                        j += 1;
                        break;
                    }
                    Some(b'\\') => {
                        if pattern.get(j + 1) == Some(&b) {
                            matched = true;
                        }
                        j += 2;
                    }
                    Some(&lo) => {
                        if pattern.get(j + 1) == Some(&b'-') && pattern.get(j + 2).is_some() {
                            let hi = pattern.get(j + 2).copied().unwrap_or(lo);
                            let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                            if (lo..=hi).contains(&b) {
                                matched = true;
                            }
                            j += 3;
                        } else {
                            if lo == b {
                                matched = true;
                            }
                            j += 1;
                        }
                    }
                }
            }
            (matched != negate, j)
        }
        Some(&c) => (c == b, p + 1),
        None => (false, p),
    }
}

/// Standard base64 with padding (RFC 4648), for binary keys in the JSON report.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2026-11-23T23:30:05Z` (with `compact`: `20261123T233005Z`, for file names).
pub fn utc_timestamp(t: SystemTime, compact: bool) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if compact {
        format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// A 64-bit hash of `data` that is the same in every run of this build (`DefaultHasher::new`
/// uses fixed keys), so a sample keeps the same keys from one run to the next.
pub fn stable_hash(data: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(b"df2redis-sync sample");
    h.write(data);
    h.finish()
}

/// True when `key` belongs to a sample of `rate` (0 < rate <= 1).
pub fn sampled(key: &[u8], rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    // Compare the hash's top 53 bits, as a fraction in [0, 1), with the rate.
    let frac = (stable_hash(key) >> 11) as f64 / (1u64 << 53) as f64;
    frac < rate
}

/// A 128-bit digest built from a canonical sequence of byte strings: each part is
/// length-prefixed so `["ab","c"]` and `["a","bc"]` differ. Two SipHash lanes with different
/// keys give 128 bits.
#[derive(Clone)]
pub struct Digest {
    a: std::hash::DefaultHasher,
    b: std::hash::DefaultHasher,
}

impl Digest {
    /// A digest seeded with a domain tag (the type name), so equal bytes of different types
    /// never collide.
    pub fn new(tag: &[u8]) -> Digest {
        let mut d = Digest {
            a: std::hash::DefaultHasher::new(),
            b: std::hash::DefaultHasher::new(),
        };
        0xa5u8.hash(&mut d.b);
        d.part(tag);
        d
    }

    /// Adds one length-prefixed part.
    pub fn part(&mut self, p: &[u8]) {
        (p.len() as u64).hash(&mut self.a);
        self.a.write(p);
        (p.len() as u64).hash(&mut self.b);
        self.b.write(p);
        self.b.write_u8(0x5a);
    }

    /// The 128-bit result.
    pub fn finish(&self) -> u128 {
        (u128::from(self.a.finish()) << 64) | u128::from(self.b.finish())
    }
}

/// A token bucket in "debt" form shared by every worker of one side: a caller takes what it
/// needs at once and, if that puts the bucket in debt, sleeps until the debt is paid off. The
/// rate is never exceeded beyond the one second of budget an idle bucket saves up. Rate 0 =
/// unlimited.
pub struct Limiter {
    rate: u64,
    state: Mutex<(Instant, f64)>,
}

impl Limiter {
    /// A limiter allowing `rate` commands per second (0 = no limit).
    pub fn new(rate: u64) -> Limiter {
        Limiter {
            rate,
            state: Mutex::new((Instant::now(), rate as f64)),
        }
    }

    /// Pays for `n` units (commands about to be sent, reply bytes just read), then sleeps
    /// until the bucket is out of debt, so the caller does not go on faster than the rate.
    pub fn pay(&self, n: u64) {
        if self.rate == 0 || n == 0 {
            return;
        }
        let wait = {
            let mut st = self.refill();
            st.1 -= n as f64;
            if st.1 >= 0.0 {
                return;
            }
            -st.1 / self.rate as f64
        };
        std::thread::sleep(Duration::from_secs_f64(wait));
    }

    /// The state after adding the budget earned since the last call (at most one second's).
    fn refill(&self) -> parking_lot::MutexGuard<'_, (Instant, f64)> {
        let rate = self.rate as f64;
        let mut st = self.state.lock();
        let now = Instant::now();
        let earned = now.duration_since(st.0).as_secs_f64() * rate;
        st.0 = now;
        st.1 = (st.1 + earned).min(rate);
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_redis() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "abc", true),
            ("a*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "abd", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("*:*:x", "a:b:c:x", true),
            ("user:*", "user:", true),
            ("user:*", "use", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), *want, "{p} vs {s}");
        }
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(utc_timestamp(t, false), "2023-11-14T22:13:20Z");
        assert_eq!(utc_timestamp(t, true), "20231114T221320Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH, false), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap, false), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn sampling_rate_is_close() {
        let n = 20_000;
        let hit = (0..n)
            .filter(|i| sampled(format!("key:{i}").as_bytes(), 0.25))
            .count();
        let frac = hit as f64 / n as f64;
        assert!((0.23..0.27).contains(&frac), "{frac}");
        assert!(sampled(b"x", 1.0));
    }

    #[test]
    fn digest_parts_are_delimited() {
        let mut a = Digest::new(b"list");
        a.part(b"ab");
        a.part(b"c");
        let mut b = Digest::new(b"list");
        b.part(b"a");
        b.part(b"bc");
        assert_ne!(a.finish(), b.finish());
        let mut c = Digest::new(b"set");
        c.part(b"ab");
        c.part(b"c");
        assert_ne!(a.finish(), c.finish());
    }

    #[test]
    fn limiter_holds_the_rate() {
        let l = Limiter::new(2000);
        let t = Instant::now();
        // The first second's budget is free; 3000 more commands need about 1.5 s.
        for _ in 0..50 {
            l.pay(100);
        }
        let e = t.elapsed();
        assert!(e >= Duration::from_millis(1300), "{e:?}");
        assert!(e < Duration::from_secs(4), "{e:?}");
    }
}
