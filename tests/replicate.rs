//! The replicate engine end to end: recorded Dragonfly sessions served by the replay master
//! (`support::replay`) replicated into a real redis-server; plus the replay master's own
//! self-test with a hand-driven replica.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use df2redis_sync::model::Cmd;
use df2redis_sync::net::{Conn, Endpoint};

use crate::support::replay::{RecordedSession, ReplayMaster};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata")).join(rel)
}

fn endpoint(addr: &str) -> Endpoint {
    let mut ep = Endpoint::plain(addr);
    ep.connect_timeout = Duration::from_secs(5);
    ep.io_timeout = Some(Duration::from_secs(10));
    ep
}

/// The replay master answers a hand-driven replica with the recorded handshake and pushes each
/// flow's recorded bytes, split at the STARTSTABLE moment; ACKs get no reply and are recorded.
#[test]
fn replay_master_serves_a_recording() {
    let dir = testdata("dragonfly-v1.40.1/s2-plain-3shards/capture");
    let rec = RecordedSession::load(&dir);
    assert_eq!(rec.flows.len(), 3);
    assert_eq!(rec.version, "df-v1.40.1");
    let m = ReplayMaster::serve(rec.clone());
    let mut main = Conn::connect(&endpoint(m.addr())).unwrap();
    let info = main
        .request_ok(&Cmd::from_args(["INFO", "SERVER"]))
        .unwrap();
    let info = String::from_utf8_lossy(info.as_bytes().unwrap()).into_owned();
    assert!(info.contains("dragonfly_version:df-v1.40.1"), "{info}");
    let capa = main
        .request_ok(&Cmd::from_args(["REPLCONF", "capa", "dragonfly"]))
        .unwrap();
    let elems = capa.as_array().unwrap();
    assert_eq!(elems[0].as_str(), Some(rec.replid.as_str()));
    assert_eq!(elems[2].as_int(), Some(3));
    let mut flows = Vec::new();
    for f in &rec.flows {
        let mut c = Conn::connect(&endpoint(m.addr())).unwrap();
        let id = f.id.to_string();
        let r = c
            .request_ok(&Cmd::from_args([
                "DFLY",
                "FLOW",
                &rec.replid,
                &rec.sync_id,
                id.as_str(),
            ]))
            .unwrap();
        assert_eq!(r.as_array().unwrap()[0].as_str(), Some("FULL"));
        flows.push(c);
    }
    main.request_ok(&Cmd::from_args(["DFLY", "SYNC", &rec.sync_id]))
        .unwrap();
    // Read each flow's pre-split bytes, then switch to stable and read the rest.
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); 3];
    for (i, c) in flows.iter_mut().enumerate() {
        let want = rec.flows[i].split;
        got[i].resize(want, 0);
        c.read_exact(&mut got[i]).unwrap();
    }
    main.request_ok(&Cmd::from_args(["DFLY", "STARTSTABLE", &rec.sync_id]))
        .unwrap();
    for (i, c) in flows.iter_mut().enumerate() {
        let f = &rec.flows[i];
        let mut rest = vec![0u8; f.data.len() - f.split];
        c.read_exact(&mut rest).unwrap();
        got[i].extend_from_slice(&rest);
        assert_eq!(got[i], f.data, "flow {i}");
        c.send(&Cmd::from_args(["REPLCONF", "ACK", "7"])).unwrap();
    }
    assert!(m.wait_acks(&[7, 7, 7], Duration::from_secs(5)));
    assert!(m.all_sent());
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    // A second STARTSTABLE is a violation.
    let r = main
        .request(&Cmd::from_args(["DFLY", "STARTSTABLE", &rec.sync_id]))
        .unwrap();
    assert!(r.is_error());
    assert_eq!(m.violations().len(), 1);
}
