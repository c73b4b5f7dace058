//! Fuzz target `snapshot`: arbitrary bytes as a FULL flow stream (snapshot, eof token,
//! journal) through `rdb::FlowDecoder`, with small limits and batches. Checks: never panics;
//! every step consumes at most its input; the events and the error (kind and offset) are
//! the same whether the input comes whole or in small chunks.
#![no_main]

use df2redis_sync::rdb::{DecodeError, FlowDecoder, FlowEvent, Limits, Step};
use libfuzzer_sys::fuzz_target;

const TOKEN: [u8; 40] = [b'0'; 40];

fn run(data: &[u8], chunk: usize, limits: Limits) -> (Vec<FlowEvent>, Option<DecodeError>) {
    let mut d = FlowDecoder::new_full(&TOKEN, limits);
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
                    Step::End => return (out, None),
                    Step::NeedMore => {
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
        max_string: 1 << 20,
        max_elements: 1 << 20,
        max_blob: 1 << 20,
        max_command: 1 << 20,
        max_args: 1 << 16,
        batch_elements: usize::from(ctl & 7) + 1,
        batch_bytes: 64,
    };
    let chunk = usize::from(ctl >> 3) + 1;
    let whole = run(rest, usize::MAX, limits);
    let chunked = run(rest, chunk, limits);
    // Events must agree; when the whole input decodes cleanly the chunked run must too, and a
    // failure must be the same failure at the same offset.
    assert_eq!(whole.0, chunked.0);
    assert_eq!(whole.1, chunked.1);
});
