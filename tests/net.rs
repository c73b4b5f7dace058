//! Integration tests: `net::Conn` against real redis-server processes — plain, password, ACL
//! user, wrong password, TLS with CA verification, wrong CA, mutual TLS, insecure mode — and
//! the hand-off from replies to raw reads without losing buffered bytes.

use std::io::Read;
use std::time::Duration;

use df2redis_sync::model::Cmd;
use df2redis_sync::net::{Cause, Conn, Endpoint, Phase, Secret, TlsOptions};
use df2redis_sync::resp::{ErrorKind, NextAction, Value};

use crate::support::{RedisServer, TlsCerts};

fn set_get(c: &mut Conn) {
    let r = c.request(&Cmd::from_args(["SET", "k", "v\r\n1"])).unwrap();
    assert!(r.is_ok(), "{r:?}");
    let r = c.request(&Cmd::from_args(["GET", "k"])).unwrap();
    assert_eq!(r, Value::Bulk(b"v\r\n1".to_vec()));
}

#[test]
fn plain_connect() {
    let s = RedisServer::start();
    let mut c = Conn::connect(&s.endpoint()).unwrap();
    assert_eq!(
        c.request(&Cmd::new("PING")).unwrap(),
        Value::Simple(b"PONG".to_vec())
    );
    set_get(&mut c);
    // The write really reached the server: redis-cli sees it.
    assert_eq!(s.cli(&["GET", "k"]), "v\r\n1");
    assert!(c.tcp().nodelay().unwrap());
}

#[test]
fn password_auth() {
    let s = RedisServer::builder().password("s3cret-pw").start();
    let mut c = Conn::connect(&s.endpoint()).unwrap();
    assert!(!format!("{c:?}").contains("s3cret-pw"));
    set_get(&mut c);

    // Without credentials the server refuses commands: classified as Auth.
    let mut anon = s.endpoint();
    anon.password = None;
    let mut c = Conn::connect(&anon).unwrap();
    let e = c.request_ok(&Cmd::from_args(["GET", "k"])).unwrap_err();
    let se = e.server_error().expect("server error");
    assert_eq!(se.kind, ErrorKind::Auth);
    assert_eq!(se.next_action(), NextAction::Fatal);
}

#[test]
fn wrong_password_is_a_clear_auth_error_without_the_password() {
    let s = RedisServer::builder().password("right-one").start();
    let mut ep = s.endpoint();
    ep.password = Some(Secret::new("wrong-horse-battery"));
    let e = Conn::connect(&ep).unwrap_err();
    assert_eq!(e.phase, Phase::Auth);
    assert!(e.is_auth());
    let msg = e.to_string();
    eprintln!("wrong password: {msg}");
    assert!(
        msg.starts_with(&format!("{}: AUTH failed:", s.addr())),
        "{msg}"
    );
    assert!(msg.contains("WRONGPASS"), "{msg}");
    assert!(msg.contains("default user"), "{msg}");
    let dbg = format!("{e:?} {ep:?}");
    for text in [&msg, &dbg] {
        assert!(!text.contains("wrong-horse-battery"), "{text}");
        assert!(!text.contains("right-one"), "{text}");
    }
}

#[test]
fn acl_user_auth() {
    let s = RedisServer::builder().acl_user("alice", "alice-pw").start();
    let ep = s.endpoint();
    assert_eq!(ep.username.as_deref(), Some("alice"));
    let mut c = Conn::connect(&ep).unwrap();
    set_get(&mut c);
    let who = c.request(&Cmd::from_args(["ACL", "WHOAMI"])).unwrap();
    assert_eq!(who.as_str(), Some("alice"));

    // Right password, wrong user; and the default user is off.
    let mut bad = ep.clone();
    bad.username = Some("bob".into());
    let e = Conn::connect(&bad).unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert!(e.to_string().contains("user bob"), "{e}");
    assert!(!e.to_string().contains("alice-pw"), "{e}");
}

#[test]
fn connect_refused_names_address_and_phase() {
    // A port bound by this test but not listened on: refused for sure while `_held` lives.
    let (_held, addr) = crate::support::refused_addr();
    let mut ep = Endpoint::plain(addr.clone());
    ep.connect_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let e = Conn::connect(&ep).unwrap_err();
    assert_eq!(e.phase, Phase::Connect);
    assert!(
        e.to_string()
            .starts_with(&format!("{addr}: connect failed:")),
        "{e}"
    );
    // Refused, not timed out.
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1), "{e}");
}

#[test]
fn tls_with_ca_verification() {
    let s = RedisServer::builder().tls().password("tls-pw").start();
    let ep = s.endpoint();
    assert!(ep.tls.is_some());
    let mut c = Conn::connect(&ep).unwrap();
    set_get(&mut c);
    assert_eq!(s.cli(&["GET", "k"]), "v\r\n1");

    // Verification by DNS name through server_name (the certificate names localhost too).
    let mut named = ep.clone();
    if let Some(t) = named.tls.as_mut() {
        t.server_name = Some("localhost".into());
    }
    let mut c = Conn::connect(&named).unwrap();
    assert!(c.request(&Cmd::new("PING")).unwrap() == Value::Simple(b"PONG".to_vec()));

    // A name the certificate does not carry is refused, with a hint.
    let mut wrong_name = ep.clone();
    if let Some(t) = wrong_name.tls.as_mut() {
        t.server_name = Some("example.com".into());
    }
    let e = Conn::connect(&wrong_name).unwrap_err();
    assert_eq!(e.phase, Phase::TlsHandshake);
    assert!(e.to_string().contains("certificate verify failed"), "{e}");
    assert!(e.to_string().contains("server name"), "{e}");
}

#[test]
fn tls_with_wrong_ca_is_a_clear_error() {
    let s = RedisServer::builder().tls().start();
    let wrong = TlsCerts::unrelated_ca(s.dir(), "other-ca.pem");
    let mut ep = s.endpoint();
    ep.tls = Some(TlsOptions {
        ca_file: Some(wrong.clone()),
        ..TlsOptions::default()
    });
    let e = Conn::connect(&ep).unwrap_err();
    assert_eq!(e.phase, Phase::TlsHandshake);
    assert!(matches!(e.cause, Cause::Tls(_)), "{e:?}");
    let msg = e.to_string();
    eprintln!("wrong CA: {msg}");
    assert!(msg.contains(&s.addr()), "{msg}");
    assert!(msg.contains("certificate verify failed"), "{msg}");
    assert!(
        msg.contains(&format!("CA file {}", wrong.display())),
        "{msg}"
    );

    // A missing CA file is a setup error naming the file.
    ep.tls = Some(TlsOptions {
        ca_file: Some(s.dir().join("nope.pem")),
        ..TlsOptions::default()
    });
    let e = Conn::connect(&ep).unwrap_err();
    assert_eq!(e.phase, Phase::TlsSetup);
    assert!(e.to_string().contains("nope.pem"), "{e}");

    // insecure_skip_verify accepts the unknown issuer (and logs a warning).
    ep.tls = Some(TlsOptions {
        insecure_skip_verify: true,
        ..TlsOptions::default()
    });
    let mut c = Conn::connect(&ep).unwrap();
    set_get(&mut c);
}

#[test]
fn mutual_tls_with_client_certificate() {
    let s = RedisServer::builder().tls_auth_clients().start();
    let ep = s.endpoint();
    assert!(ep.tls.as_ref().is_some_and(|t| t.cert_file.is_some()));
    let mut c = Conn::connect(&ep).unwrap();
    set_get(&mut c);

    // Without the client certificate the server rejects us (TLS 1.3: the alert arrives with
    // the first read, so the failure may surface at the first request).
    let mut no_cert = ep.clone();
    if let Some(t) = no_cert.tls.as_mut() {
        t.cert_file = None;
        t.key_file = None;
    }
    let r = Conn::connect(&no_cert).and_then(|mut c| c.request(&Cmd::new("PING")));
    let e = r.unwrap_err();
    assert!(
        matches!(e.phase, Phase::TlsHandshake | Phase::Read | Phase::Write),
        "{e}"
    );

    // A certificate without a key is a setup error.
    let mut half = ep.clone();
    if let Some(t) = half.tls.as_mut() {
        t.key_file = None;
    }
    let e = Conn::connect(&half).unwrap_err();
    assert_eq!(e.phase, Phase::TlsSetup, "{e}");
}

#[test]
fn buffered_bytes_survive_the_switch_to_raw_reads() {
    let s = RedisServer::start();
    let mut c = Conn::connect(&s.endpoint()).unwrap();
    let big = vec![b'x'; 300_000];
    let mut set = Cmd::from_args(["SET", "big"]);
    set.arg(&big);
    assert!(c.request(&set).unwrap().is_ok());
    // Pipeline PING + GET: read the PING reply as RESP, then the GET reply raw. Part of the
    // GET reply is typically already buffered behind +PONG.
    c.send_all([&Cmd::new("PING"), &Cmd::from_args(["GET", "big"])])
        .unwrap();
    assert_eq!(c.read_reply().unwrap(), Value::Simple(b"PONG".to_vec()));
    let header = b"$300000\r\n";
    let mut raw = vec![0u8; header.len() + big.len() + 2];
    c.read_exact(&mut raw).unwrap();
    assert_eq!(&raw[..header.len()], header);
    assert!(raw[header.len()..header.len() + big.len()] == big[..]);
    assert_eq!(&raw[raw.len() - 2..], b"\r\n");
    assert!(c.buffered().is_empty());
    // The connection is still usable for replies.
    assert_eq!(
        c.request(&Cmd::new("PING")).unwrap(),
        Value::Simple(b"PONG".to_vec())
    );
}

#[test]
fn read_timeout_is_reported_as_timeout() {
    let s = RedisServer::start();
    let mut c = Conn::connect(&s.endpoint()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // BLPOP on an empty list blocks longer than the read timeout.
    c.send(&Cmd::from_args(["BLPOP", "empty", "5"])).unwrap();
    let e = c.read_reply().unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(e.phase, Phase::Read);
}

/// A Dragonfly flow connection replayed from a real v1.40.1 recording: the `DFLY FLOW` reply
/// is read as RESP and the snapshot bytes behind it — some already buffered with the reply —
/// come out of `Conn`'s `Read` intact and in order.
#[test]
fn recorded_flow_reply_then_raw_snapshot_bytes() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    let cap =
        crate::support::shared_dir().join("testdata/dragonfly-v1.40.1/s2-plain-3shards/capture");
    let s2c = std::fs::read(cap.join("conn-001.s2c.bin")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let served = s2c.clone();
    let master = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let mut r = BufReader::new(sock.try_clone().unwrap());
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).unwrap();
        let mut w = sock;
        // One write: the reply and the first snapshot bytes arrive together.
        w.write_all(&served).unwrap();
        line
    });
    let mut c = Conn::connect(&Endpoint::plain(addr)).unwrap();
    let reply = c
        .request(&Cmd::from_args(["DFLY", "FLOW", "b8a94e1e", "SYNC1", "1"]))
        .unwrap();
    let parts = reply.as_array().unwrap();
    assert_eq!(parts[0].as_str(), Some("FULL"));
    assert_eq!(parts[1].as_str().map(str::len), Some(40));
    let reply_len = reply.to_resp().len();
    assert_eq!(c.consumed(), reply_len as u64);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.starts_with(b"REDIS0009"));
    assert!(rest == s2c[reply_len..], "stream bytes differ");
    let sent = master.join().unwrap();
    // The command went out as a RESP array of five bulk strings.
    assert_eq!(sent, b"*5\r\n");
}

/// The harness kills the server and removes its directory when the test using it panics.
#[test]
fn harness_cleans_up_after_a_panicking_test() {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let s = RedisServer::start();
        tx.send((s.pid(), s.dir().to_path_buf())).unwrap();
        panic!("deliberate panic to exercise the harness's Drop");
    });
    assert!(t.join().is_err());
    let (pid, dir) = rx.recv().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} still running"
    );
    assert!(!dir.exists(), "{} not removed", dir.display());
}
