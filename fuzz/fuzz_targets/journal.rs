//! Fuzz target `journal`: arbitrary bytes as a live journal stream through
//! `journal::JournalDecoder` and, counted, `LsnCounter`. Checks: never panics; every step
//! consumes at most its input; items and errors are the same whole and in small chunks.
#![no_main]

use df2redis_sync::journal::{JournalDecoder, JournalItem, LsnCounter};
use df2redis_sync::model::Lsn;
use df2redis_sync::rdb::{DecodeError, Limits, Step};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], chunk: usize, limits: Limits) -> (Vec<JournalItem>, Option<DecodeError>) {
    let mut d = JournalDecoder::new(limits);
    let mut buf = Vec::new();
    let (mut pos, mut fed) = (0usize, 0usize);
    let mut out = Vec::new();
    loop {
        match d.step(&buf[pos..]) {
            Ok((s, n)) => {
                assert!(n <= buf.len() - pos, "consumed more than given");
                pos += n;
                match s {
                    Step::Item(e) => out.push(e),
                    Step::End | Step::NeedMore => {
                        if fed == data.len() {
                            return (out, None);
                        }
                        let k = chunk.min(data.len() - fed);
                        buf.drain(..pos);
                        pos = 0;
                        buf.extend_from_slice(&data[fed..fed + k]);
                        fed += k;
                    }
                }
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_string: 1 << 16,
        max_command: 1 << 20,
        max_args: 1 << 12,
        ..Limits::default()
    };
    let whole = run(rest, usize::MAX, limits);
    let chunked = run(rest, usize::from(ctl % 32) + 1, limits);
    assert_eq!(whole.0, chunked.0);
    assert_eq!(whole.1, chunked.1);
    let mut c = LsnCounter::new(Lsn(u64::from(ctl)));
    for it in &whole.0 {
        let _ = c.observe(it);
    }
});
