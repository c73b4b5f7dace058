//! Test fixtures: real `redis-server` processes on free loopback ports, each in its own temp
//! dir, killed and cleaned up on drop (also when the test panics).
//!
//! ```ignore
//! let s = RedisServer::start();                                  // plain standalone
//! let s = RedisServer::builder().password("pw").start();         // requirepass
//! let s = RedisServer::builder().acl_user("alice", "pw").start();// ACL user, default user off
//! let s = RedisServer::builder().tls().tls_auth_clients().start(); // TLS only, mutual TLS
//! let c = RedisCluster::builder().masters(3).replicas(1).start(); // cluster_state:ok
//! s.cli(&["SET", "k", "v"]);  s.endpoint();  s.addr();  s.dir();
//! ```
//!
//! `redis-server` and `redis-cli` come from `PATH` (`scripts/setup.sh` installs them).
//! Certificates are generated at test time with rcgen: one CA, a server certificate for
//! `localhost` and `127.0.0.1`, and a client certificate.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod cluster_ops;
pub mod emu;
pub mod replay;
pub mod synthetic;

use df2redis_sync::net::{Endpoint, Secret, TlsOptions};

/// `CARGO_MANIFEST_DIR/../shared` (the shared docs and recordings).
pub fn shared_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        p.is_dir(),
        "{} is missing: the shared directory (docs, testdata) must sit beside the repository",
        p.display()
    );
    p
}

/// Full path of a program on `PATH`, or a panic telling how to install it.
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found on PATH: run scripts/setup.sh (installs redis-server and redis-tools)")
}

/// Ports handed out by this process, so parallel tests never pick the same one.
fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A free loopback port (the kernel picks it). With `bus`, port + 10000 (the cluster bus) must
/// be free as well.
pub fn free_port(bus: bool) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if bus {
            if port > 55535 {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port + 10000)).is_err() {
                continue;
            }
        }
        let mut t = taken().lock().unwrap_or_else(|e| e.into_inner());
        if bus && t.contains(&(port + 10000)) {
            continue;
        }
        if t.insert(port) {
            if bus {
                // Never hand the bus port out as another server's port.
                t.insert(port + 10000);
            }
            return port;
        }
    }
    panic!("no free loopback port found after 200 tries")
}

/// A loopback address that refuses connections for as long as the returned socket lives: the
/// port is bound (so no other process can take it) but never listened on, so a connect gets
/// a reset (`ECONNREFUSED`) at once. Unlike a port that was free a moment ago, nothing can
/// start answering on it during the test.
pub fn refused_addr() -> (socket2::Socket, String) {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    s.bind(&any.into()).expect("bind 127.0.0.1:0");
    let addr = s
        .local_addr()
        .expect("local_addr")
        .as_socket()
        .expect("an inet address");
    (s, addr.to_string())
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `process_id` (`INFO server`) of the plain, password-less redis-server answering on
/// loopback `port`, if one answers: tells our own server from another process that took the
/// port.
pub fn redis_process_id(port: u16) -> Option<u32> {
    let mut ep = Endpoint::plain(format!("127.0.0.1:{port}"));
    ep.connect_timeout = Duration::from_secs(2);
    ep.io_timeout = Some(Duration::from_secs(5));
    let mut c = df2redis_sync::net::Conn::connect(&ep).ok()?;
    let v = c
        .request(&df2redis_sync::model::Cmd::from_args(["INFO", "server"]))
        .ok()?;
    let text = String::from_utf8_lossy(v.as_bytes()?).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Certificates for one TLS test setup, as PEM files in a directory.
#[derive(Debug, Clone)]
pub struct TlsCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn make_ca(cn: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).expect("self-sign CA");
    (cert, key)
}

fn make_leaf(
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
    cn: &str,
    names: &[&str],
    usage: &[rcgen::ExtendedKeyUsagePurpose],
) -> (String, String) {
    use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(names).expect("leaf params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = usage.to_vec();
    let cert = p.signed_by(&key, ca, ca_key).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

impl TlsCerts {
    /// Generates a CA, a server certificate (localhost, 127.0.0.1) and a client certificate
    /// into `dir`.
    pub fn generate(dir: &Path) -> TlsCerts {
        use rcgen::ExtendedKeyUsagePurpose as U;
        let (ca, ca_key) = make_ca("df2redis-sync test CA");
        let (scert, skey) = make_leaf(
            &ca,
            &ca_key,
            "localhost",
            &["localhost", "127.0.0.1"],
            // Client auth too: cluster nodes present this certificate to each other on the
            // cluster bus, where Redis always requires a client certificate.
            &[U::ServerAuth, U::ClientAuth],
        );
        let client = "df2redis-sync client";
        let (ccert, ckey) = make_leaf(&ca, &ca_key, client, &[], &[U::ClientAuth]);
        let w = |name: &str, pem: &str| {
            let p = dir.join(name);
            fs::write(&p, pem).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            p
        };
        TlsCerts {
            ca: w("ca.pem", &ca.pem()),
            server_cert: w("server.pem", &scert),
            server_key: w("server.key", &skey),
            client_cert: w("client.pem", &ccert),
            client_key: w("client.key", &ckey),
        }
    }

    /// Writes an unrelated CA certificate (signed nothing we use) to `dir/name`: the "wrong CA".
    pub fn unrelated_ca(dir: &Path, name: &str) -> PathBuf {
        let (ca, _) = make_ca("unrelated test CA");
        let p = dir.join(name);
        fs::write(&p, ca.pem()).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

/// Options for one server.
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    acl_user: Option<(String, String)>,
    tls: bool,
    tls_auth_clients: bool,
    save: bool,
    cluster: bool,
    args: Vec<String>,
    certs: Option<TlsCerts>,
}

impl RedisServerBuilder {
    /// `requirepass`.
    pub fn password(mut self, p: &str) -> Self {
        self.password = Some(p.into());
        self
    }

    /// Adds ACL user `name` with password `pass` and all permissions; turns the default user
    /// off unless a `password` is also set, so that only `AUTH name pass` works.
    pub fn acl_user(mut self, name: &str, pass: &str) -> Self {
        self.acl_user = Some((name.into(), pass.into()));
        self
    }

    /// TLS only: `--tls-port`, `--port 0`, certificates generated in the server's dir.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// TLS with `tls-auth-clients yes` (mutual TLS); implies [`Self::tls`].
    pub fn tls_auth_clients(mut self) -> Self {
        self.tls = true;
        self.tls_auth_clients = true;
        self
    }

    /// Use these certificates instead of generating new ones.
    pub fn certs(mut self, c: TlsCerts) -> Self {
        self.certs = Some(c);
        self
    }

    /// Keep Redis's default RDB saving instead of `--save ""`.
    pub fn save(mut self) -> Self {
        self.save = true;
        self
    }

    /// `cluster-enabled yes` (used by [`RedisCluster`]).
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Extra `redis-server` arguments, e.g. `["--maxmemory", "10mb"]`.
    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(self) -> RedisServer {
        let server = program("redis-server");
        let mut dir = tempfile::Builder::new()
            .prefix("df2redis-redis-")
            .tempdir()
            .expect("temp dir");
        let certs = if self.tls {
            Some(
                self.certs
                    .clone()
                    .unwrap_or_else(|| TlsCerts::generate(dir.path())),
            )
        } else {
            None
        };
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port(self.cluster);
            let log = dir.path().join("redis.log");
            let _ = fs::remove_file(&log);
            let mut a: Vec<String> = vec!["--bind".into(), "127.0.0.1".into()];
            let d = dir.path().to_string_lossy().into_owned();
            a.extend(["--dir".into(), d]);
            a.extend(["--logfile".into(), log.to_string_lossy().into_owned()]);
            a.extend(["--daemonize".into(), "no".into()]);
            a.extend(["--appendonly".into(), "no".into()]);
            if !self.save {
                a.extend(["--save".into(), String::new()]);
            }
            match &certs {
                Some(c) => {
                    a.extend(["--port".into(), "0".into(), "--tls-port".into()]);
                    a.push(port.to_string());
                    let p = |p: &PathBuf| p.to_string_lossy().into_owned();
                    a.extend(["--tls-cert-file".into(), p(&c.server_cert)]);
                    a.extend(["--tls-key-file".into(), p(&c.server_key)]);
                    a.extend(["--tls-ca-cert-file".into(), p(&c.ca)]);
                    let auth = if self.tls_auth_clients { "yes" } else { "no" };
                    a.extend(["--tls-auth-clients".into(), auth.into()]);
                }
                None => a.extend(["--port".into(), port.to_string()]),
            }
            if let Some(p) = &self.password {
                a.extend(["--requirepass".into(), p.clone()]);
            }
            if let Some((u, p)) = &self.acl_user {
                a.extend(["--user".into(), u.clone(), "on".into(), format!(">{p}")]);
                a.extend(["~*".into(), "&*".into(), "+@all".into()]);
                if self.password.is_none() {
                    a.extend(["--user".into(), "default".into(), "off".into()]);
                }
            }
            if self.cluster && certs.is_some() {
                // Cluster bus and replication over TLS too, as a TLS-only deployment has them.
                a.extend(["--tls-cluster".into(), "yes".into()]);
                a.extend(["--tls-replication".into(), "yes".into()]);
            }
            if self.cluster {
                a.extend(["--cluster-enabled".into(), "yes".into()]);
                a.extend(["--cluster-config-file".into(), "nodes.conf".into()]);
                a.extend(["--cluster-node-timeout".into(), "3000".into()]);
            }
            a.extend(self.args.iter().cloned());
            let child = Command::new(&server)
                .args(&a)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", server.display()));
            let mut s = RedisServer {
                child,
                port,
                dir,
                opts: self.clone(),
                certs: certs.clone(),
            };
            // Generous: a loaded 2-core machine has taken seconds to start one.
            match s.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return s,
                Err(log_text) if log_text.contains("Address already in use") => {
                    last_log = log_text;
                    // Dropping `s` kills the child but would delete the dir: take it back.
                    dir = s.take_dir();
                    // A cluster node may have saved its config naming the port it lost.
                    let _ = fs::remove_file(dir.path().join("nodes.conf"));
                    continue;
                }
                Err(log_text) => panic!(
                    "redis-server on port {port} did not start; its log (tail):\n{}",
                    tail_lines(&log_text, 30)
                ),
            }
        }
        panic!(
            "redis-server could not bind a port after 5 tries; last log (tail):\n{}",
            tail_lines(&last_log, 30)
        )
    }
}

/// One running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    opts: RedisServerBuilder,
    certs: Option<TlsCerts>,
}

impl RedisServer {
    /// Builder for non-default servers.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// A plain standalone server.
    pub fn start() -> RedisServer {
        RedisServerBuilder::default().start()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The listening port (the TLS port for TLS servers).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's working directory (RDB, nodes.conf, redis.log, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The certificates of a TLS server.
    pub fn certs(&self) -> Option<&TlsCerts> {
        self.certs.as_ref()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// An endpoint with this server's address, credentials and TLS settings (CA file; the
    /// client certificate when the server requires one).
    pub fn endpoint(&self) -> Endpoint {
        let mut ep = Endpoint::plain(self.addr());
        ep.connect_timeout = Duration::from_secs(5);
        ep.io_timeout = Some(Duration::from_secs(10));
        if let Some((u, p)) = &self.opts.acl_user {
            ep.username = Some(u.clone());
            ep.password = Some(Secret::new(p.clone()));
        } else if let Some(p) = &self.opts.password {
            ep.password = Some(Secret::new(p.clone()));
        }
        if let Some(c) = &self.certs {
            let mut t = TlsOptions {
                ca_file: Some(c.ca.clone()),
                ..TlsOptions::default()
            };
            if self.opts.tls_auth_clients {
                t.cert_file = Some(c.client_cert.clone());
                t.key_file = Some(c.client_key.clone());
            }
            ep.tls = Some(t);
        }
        ep
    }

    /// The `redis-cli` arguments that reach and authenticate to this server.
    pub fn cli_base_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["-h".into(), "127.0.0.1".into()];
        a.extend([
            "-p".into(),
            self.port.to_string(),
            "--no-auth-warning".into(),
        ]);
        if let Some((u, p)) = &self.opts.acl_user {
            a.extend(["--user".into(), u.clone(), "--pass".into(), p.clone()]);
        } else if let Some(p) = &self.opts.password {
            a.extend(["-a".into(), p.clone()]);
        }
        if let Some(c) = &self.certs {
            let p = |p: &PathBuf| p.to_string_lossy().into_owned();
            a.extend(["--tls".into(), "--cacert".into(), p(&c.ca)]);
            a.extend(["--cert".into(), p(&c.client_cert)]);
            a.extend(["--key".into(), p(&c.client_key)]);
        }
        a
    }

    /// Runs `redis-cli <args>` against this server and returns its stdout, trimmed. Panics
    /// when redis-cli fails to run or exits non-zero.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(program("redis-cli"));
        cmd.args(self.cli_base_args()).args(args);
        let out = run_bounded(&mut cmd, Duration::from_secs(90));
        assert!(
            out.status.success(),
            "redis-cli {args:?} on {} failed: {}{}",
            self.addr(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Kills the server now (as in a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        let placeholder = tempfile::Builder::new()
            .prefix("df2redis-redis-")
            .tempdir()
            .expect("temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Waits for "Ready to accept connections" in the log (works for TLS-only servers too),
    /// then for a plain server also for a TCP answer. `Err(log)` if the process exited or the
    /// time ran out.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("(exited with {status})\n{}", self.log()));
            }
            if self.log().contains("Ready to accept connections")
                && (self.certs.is_some() || self.ping_plain())
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                self.kill();
                return Err(format!("(not ready after {limit:?})\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends an inline PING; any reply (even `-NOAUTH`) proves the server answers.
    fn ping_plain(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok() && matches!(s.read(&mut b), Ok(n) if n > 0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- redis-server {} log tail (test panicked) ---\n{}",
                self.addr(),
                tail.join("\n")
            );
        }
        self.kill();
    }
}

/// Runs a command with stdin closed, killing it and panicking if it takes longer than
/// `limit` (a `redis-cli --cluster create` that never converges must not hang the tests).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let so = out.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not finish within {limit:?}; output so far:\n{}",
                String::from_utf8_lossy(&so)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Options for a cluster.
#[derive(Debug, Clone)]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas: usize,
    password: Option<String>,
    tls: bool,
}

impl RedisClusterBuilder {
    /// Number of masters (at least 3, as `redis-cli --cluster create` requires).
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    /// Replicas per master.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// `requirepass` and `masterauth` on every node.
    pub fn password(mut self, p: &str) -> Self {
        self.password = Some(p.into());
        self
    }

    /// TLS only on every node (clients, cluster bus, replication), one CA for all.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts the nodes, creates the cluster with all 16384 slots assigned, and waits until
    /// every node reports `cluster_state:ok` and every replica is in sync.
    pub fn start(self) -> RedisCluster {
        let total = self.masters * (1 + self.replicas);
        let certs_dir = tempfile::Builder::new()
            .prefix("df2redis-certs-")
            .tempdir()
            .expect("temp dir");
        let certs = self.tls.then(|| TlsCerts::generate(certs_dir.path()));
        let nodes: Vec<RedisServer> = (0..total)
            .map(|_| {
                let mut b = RedisServer::builder().cluster();
                if let Some(p) = &self.password {
                    b = b.password(p).args(&["--masterauth", p]);
                }
                if let Some(c) = &certs {
                    b = b.tls().certs(c.clone());
                }
                b.start()
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| n.addr()));
        args.extend(["--cluster-replicas".into(), self.replicas.to_string()]);
        args.push("--cluster-yes".into());
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        nodes[0].cli(&refs);
        let c = RedisCluster {
            nodes,
            password: self.password.clone(),
            certs,
            _certs_dir: certs_dir,
        };
        c.wait_ok(Duration::from_secs(60));
        c
    }
}

/// A running Redis Cluster; every node is killed on drop.
pub struct RedisCluster {
    // Field order = drop order: the servers go before the certificates they read.
    nodes: Vec<RedisServer>,
    /// `requirepass`/`masterauth` of every node, for nodes added later.
    password: Option<String>,
    /// The cluster's certificates (TLS clusters), for nodes added later.
    certs: Option<TlsCerts>,
    _certs_dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Builder; default 3 masters, no replicas.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder {
            masters: 3,
            replicas: 0,
            password: None,
            tls: false,
        }
    }

    /// 3 masters, no replicas.
    pub fn start() -> RedisCluster {
        RedisCluster::builder().start()
    }

    /// All nodes, in creation order (`redis-cli` makes the first `masters` of them masters).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Mutable access, e.g. to kill a node.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Endpoint of node `i` (any node is a valid discovery seed).
    pub fn endpoint(&self, i: usize) -> Endpoint {
        self.nodes[i].endpoint()
    }

    /// Index of a replica of node `master`, if it has one.
    pub fn replica_of(&self, master: usize) -> Option<usize> {
        let id = self.nodes[master].cli(&["CLUSTER", "MYID"]);
        let lines = self.nodes[master].cli(&["CLUSTER", "REPLICAS", &id]);
        // Each line: `<id> <ip>:<port>@<bus> slave <master id> ...`.
        let port: u16 = lines
            .split_whitespace()
            .nth(1)?
            .split(['@', ':'])
            .nth(1)?
            .parse()
            .ok()?;
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// Promotes replica `replica` with a coordinated `CLUSTER FAILOVER` and waits until it
    /// is a master and the cluster is ok again (its old master is then its replica).
    pub fn failover(&self, replica: usize) {
        let n = &self.nodes[replica];
        assert_eq!(n.cli(&["CLUSTER", "FAILOVER"]), "OK");
        let start = Instant::now();
        while !n.cli(&["ROLE"]).starts_with("master") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} not promoted after 30 s",
                n.addr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ok(Duration::from_secs(60));
    }

    /// Waits until every live node says `cluster_state:ok` with all slots assigned and knows
    /// every node, and every replica's link to its master is up.
    pub fn wait_ok(&self, limit: Duration) {
        let start = Instant::now();
        let total = self.nodes.len();
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                let repl = n.cli(&["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.contains(&format!("cluster_known_nodes:{total}"))
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "cluster not ok after {limit:?}; CLUSTER INFO of node 0:\n{}",
                self.nodes[0].cli(&["CLUSTER", "INFO"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
