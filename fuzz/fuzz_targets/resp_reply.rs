//! Fuzz target: the RESP reply decoder on arbitrary bytes, with default and tiny limits.
//!
//! Properties checked besides "never panics": a decoded reply used at most the input, its
//! re-encoding decodes to the same reply (compared by encoding, so NaN doubles compare), and
//! error classification accepts whatever error text came out.
#![no_main]

use df2redis_sync::resp::{decode, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tiny = Limits {
        max_bulk_len: 64,
        max_array_len: 16,
        max_depth: 4,
        max_line_len: 64,
    };
    for lim in [Limits::default(), tiny] {
        let mut rest = data;
        // Decode a pipeline of replies, as a connection would.
        while let Ok(Some((v, used))) = decode(rest, &lim) {
            assert!(used > 0 && used <= rest.len());
            let _ = v.server_error();
            let enc = v.to_resp();
            let (again, n) = decode(&enc, &Limits::default())
                .expect("re-encoded reply decodes")
                .expect("re-encoded reply is complete");
            assert_eq!(n, enc.len());
            assert_eq!(again.to_resp(), enc);
            rest = &rest[used..];
        }
    }
});
