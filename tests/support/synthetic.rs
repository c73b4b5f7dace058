//! Hand-built replication sessions for the replay master (`support::replay`): the bytes a
//! Dragonfly master would send, written from the protocol document instead of recorded, for
//! shapes no recording holds (a pre-v1.21 MULTI_COMMAND/EXEC group, a FLUSHALL the shards
//! disagree about, a big uniform dataset for throughput figures).
//!
//! Every flow is a v1.40.1-style FULL flow: `REDIS0009`, `SELECTDB 0`, the snapshot, a
//! `FULLSYNC_END` (0xC8 + 8 zero bytes) where the replay master splits (what it sends before
//! `DFLY STARTSTABLE`), `JOURNAL_OFFSET 1` (0xD3 + u64 LE), `EOF` + zero checksum, the
//! 40-byte eof token, then the journal (protocol doc §3, §4).

#![allow(dead_code)]

use std::path::PathBuf;

pub use df2redis_sync::emulator::rdbenc::put_pu as pu;

use super::replay::{RecordedFlow, RecordedSession};

/// The replication id every synthetic session uses.
const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";

/// A raw RDB string, `pu(len)` + the bytes (the journal's argument form: never the integer
/// encodings `put_str` may choose).
pub fn rdb_str(out: &mut Vec<u8>, s: &[u8]) {
    pu(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// One journal entry with a command payload: `06 00` (SELECT 0), `op pu(txid) pu(shard_cnt)
/// pu(n) pu(total_len) n × string` (§4.3).
pub fn journal_entry(out: &mut Vec<u8>, op: u8, txid: u64, shards: u64, args: &[&str]) {
    out.extend_from_slice(&[0x06, 0x00, op]);
    pu(out, txid);
    pu(out, shards);
    pu(out, args.len() as u64);
    pu(out, args.iter().map(|a| a.len() as u64).sum());
    for a in args {
        rdb_str(out, a.as_bytes());
    }
}

/// The snapshot head (`REDIS0009`, `SELECTDB 0`) of a synthetic flow.
fn snapshot_head() -> Vec<u8> {
    let mut data = b"REDIS0009".to_vec();
    data.extend_from_slice(&[0xFE, 0x00]);
    data
}

/// Ends the snapshot of `data` (FULLSYNC_END, JOURNAL_OFFSET 1, EOF, the token of flow `id`);
/// returns the split (the bytes sent before STARTSTABLE) and the token.
fn snapshot_tail(data: &mut Vec<u8>, id: u32) -> (usize, String) {
    let token = format!("{:040x}", 0xabc0 + u64::from(id));
    data.extend_from_slice(&[0xC8, 0, 0, 0, 0, 0, 0, 0, 0]);
    let split = data.len();
    data.push(0xD3);
    data.extend_from_slice(&1u64.to_le_bytes());
    data.extend_from_slice(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 0]);
    data.extend_from_slice(token.as_bytes());
    (split, token)
}

/// A v1.40.1 session of these flows (the `capa dragonfly` reply announces their count).
fn session(flows: Vec<RecordedFlow>) -> RecordedSession {
    let capa = format!(
        "*5\r\n+{REPLID}\r\n+SYNC1\r\n:{}\r\n:5\r\n+{REPLID}\r\n",
        flows.len()
    );
    RecordedSession {
        dir: PathBuf::from("synthetic"),
        version: "df-v1.40.1".into(),
        capa_reply: capa.into_bytes(),
        replid: REPLID.to_string(),
        sync_id: "SYNC1".into(),
        flows,
    }
}

/// A FULL flow whose recorded replica ended by ACKing `last_ack`.
fn flow(id: u32, token: &str, data: Vec<u8>, split: usize, last_ack: u64) -> RecordedFlow {
    RecordedFlow {
        id,
        reply: format!("*2\r\n+FULL\r\n+{token}\r\n").into_bytes(),
        partial: false,
        requested_lsn: None,
        data,
        split,
        acks: vec![last_ack],
    }
}

/// A one-flow session with an empty snapshot whose journal is `cmds`, each a `SELECT 0` +
/// `COMMAND` entry with txid `1 + index`. Two shapes are special:
/// * `["MULTI", cmd…]` / `["EXEC"]`: the pre-v1.21 atomic group, MULTI_COMMAND entries (0x0B)
///   with txid 100 ended by `0C pu(100) pu(1)` (EXEC has no SELECT and no payload);
/// * `["TXID", "n", cmd…]`: `cmd` with txid `n` and a shard count of every flow (how Dragonfly
///   journals a FLUSHALL on each shard).
///
/// The final ACK is `1 + cmds.len()`: every item is one entry.
pub fn journal_session(cmds: &[&[&str]]) -> RecordedSession {
    journal_session_flows(&[cmds])
}

/// [`journal_session`] with one journal per flow.
pub fn journal_session_flows(flows: &[&[&[&str]]]) -> RecordedSession {
    session(
        flows
            .iter()
            .enumerate()
            .map(|(i, cmds)| journal_flow(i as u32, flows.len() as u64, cmds))
            .collect(),
    )
}

/// The session a master serves to a replica resuming at `lsn`: one PARTIAL flow (v1.35+: no
/// RDB framing) whose journal, from `lsn` on, is `cmds` (the shapes of [`journal_session`]).
pub fn partial_journal_session(lsn: u64, cmds: &[&[&str]]) -> RecordedSession {
    let full = journal_session(cmds);
    let mut f = full.flows[0].clone();
    let journal = f.data.split_off(f.data.len() - journal_bytes(&f.data));
    let token = format!("{:040x}", 0xabc0u64);
    f.reply = format!("*2\r\n+PARTIAL\r\n+{token}\r\n").into_bytes();
    f.partial = true;
    f.requested_lsn = Some(lsn);
    f.data = journal;
    f.split = 0;
    f.acks = vec![lsn + cmds.len() as u64];
    session(vec![f])
}

/// How many bytes of a synthetic FULL flow follow its eof token (its journal).
fn journal_bytes(data: &[u8]) -> usize {
    let token = format!("{:040x}", 0xabc0u64);
    let at = data
        .windows(40)
        .position(|w| w == token.as_bytes())
        .expect("token");
    data.len() - at - 40
}

/// Flow `id` (of `flow_count`) of a [`journal_session`].
fn journal_flow(id: u32, flow_count: u64, cmds: &[&[&str]]) -> RecordedFlow {
    let mut data = snapshot_head();
    let (split, token) = snapshot_tail(&mut data, id);
    for (i, args) in cmds.iter().enumerate() {
        match args {
            ["MULTI", rest @ ..] => journal_entry(&mut data, 0x0B, 100, 1, rest),
            ["EXEC", ..] => {
                data.push(0x0C);
                pu(&mut data, 100);
                pu(&mut data, 1);
            }
            ["TXID", t, rest @ ..] => {
                let txid = t.parse().expect("TXID <number>");
                journal_entry(&mut data, 0x0A, txid, flow_count, rest)
            }
            _ => journal_entry(&mut data, 0x0A, 1 + i as u64, 1, args),
        }
    }
    flow(id, &token, data, split, 1 + cmds.len() as u64)
}

/// `flows` flows, `keys` string keys of `value_len` bytes in the snapshot (uncompressed, key
/// `key:k` on flow `k % flows`), then `sets` journal `SET`s overwriting them (`SET key:(k %
/// keys) jk` on flow `k % flows`).
pub fn string_session(flows: u32, keys: u64, value_len: usize, sets: u64) -> RecordedSession {
    let value = vec![b'v'; value_len];
    let out = (0..flows)
        .map(|f| {
            let mut data = snapshot_head();
            for k in (0..keys).filter(|k| k % u64::from(flows) == u64::from(f)) {
                data.push(0x00);
                rdb_str(&mut data, format!("key:{k}").as_bytes());
                rdb_str(&mut data, &value);
            }
            let (split, token) = snapshot_tail(&mut data, f);
            let mut n = 0u64;
            for k in (0..sets).filter(|k| k % u64::from(flows) == u64::from(f)) {
                let key = format!("key:{}", k % keys.max(1));
                let val = format!("j{k}");
                journal_entry(&mut data, 0x0A, 0, 1, &["SET", &key, &val]);
                n += 1;
            }
            flow(f, &token, data, split, 1 + n)
        })
        .collect();
    session(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use df2redis_sync::journal::{EntryKind, JournalDecoder, JournalItem};
    use df2redis_sync::wire::Limits;

    /// The journal part of a synthetic flow decodes into exactly the entries asked for: a
    /// group's EXEC is complete on its own (an earlier builder wrote `0C 64 01`, whose `64` is
    /// the first byte of a 14-bit `pu`, so the decoder waited for a byte of the next entry).
    #[test]
    fn journal_session_decodes_entry_by_entry() {
        let s = journal_session(&[
            &["SET", "a", "1"],
            &["MULTI", "SET", "b", "2"],
            &["MULTI", "SET", "c", "3"],
            &["EXEC"],
        ]);
        let f = &s.flows[0];
        let journal = &f.data[f.data.len() - journal_bytes(&f.data)..];
        let mut d = JournalDecoder::new(Limits::default());
        let mut items = Vec::new();
        d.decode_all(journal, &mut items).unwrap();
        let kinds: Vec<(EntryKind, u64, u64)> = items
            .iter()
            .map(|i| match i {
                JournalItem::Entry(e) => (e.kind, e.txid, e.shard_cnt),
                JournalItem::LsnMarker(l) => panic!("unexpected LSN marker {l:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (EntryKind::Command, 1, 1),
                (EntryKind::MultiCommand, 100, 1),
                (EntryKind::MultiCommand, 100, 1),
                (EntryKind::Exec, 100, 1),
            ]
        );
        assert_eq!(f.acks, [5]);
    }
}
