//! The backing redis-server: starting one from `PATH` on a free loopback port (killed when the
//! emulator ends), and a blocking, pipelining client connection to it.
//!
//! Starting is the fragile part of every test run on a loaded machine: a port found free can
//! be taken by another process before redis-server binds it, and a listener that answers PING
//! on that port may then be somebody else's server. [`RedisProcess::start`] therefore checks
//! that the server which answers is the child it spawned (`INFO server` `process_id`), watches
//! the child for an early exit, and retries on a new port a few times before giving up with
//! the ports it tried and the tail of the last redis-server log.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::proto::{ReadBuf, Value};

/// The redis-server children we started, with their directories. They live here rather than
/// in [`RedisProcess`] so the signal path (which exits without running destructors) can kill
/// *and reap* each one before removing its directory: a server that is only signalled may
/// still write its shutdown lines, re-creating `redis.log` in a directory being removed (the
/// leftover `/tmp/dfly-emulator-redis-*` directories held exactly those lines).
static CHILDREN: parking_lot::Mutex<Vec<(Child, PathBuf)>> = parking_lot::Mutex::new(Vec::new());

/// SIGKILL (nothing is persisted: no shutdown work to wait for), reap, then remove the
/// directory, which nothing can write to any more.
fn stop(mut child: Child, dir: &Path) {
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// Stops every redis-server this process started and removes its directory (signal path).
pub fn kill_registered() {
    let all: Vec<(Child, PathBuf)> = CHILDREN.lock().drain(..).collect();
    for (child, dir) in all {
        stop(child, &dir);
    }
}

/// A redis-server child process (held in the registry above); killed, reaped and its
/// directory removed on drop.
pub struct RedisProcess {
    pid: u32,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: PathBuf,
}

/// Asks the kernel for a free loopback port.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How many ports [`RedisProcess::start`] tries before giving up.
pub const START_ATTEMPTS: usize = 5;

/// How long one attempt waits for the server to answer. Generous: on a loaded 2-core machine
/// a redis-server has been seen to take seconds to come up.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// Why one start attempt failed.
enum Attempt {
    /// Worth another port: the port was taken (by the time redis-server bound it, or the
    /// server answering on it is not ours).
    PortTaken(String),
    /// Not worth another port (the binary is missing, the server rejects its options, it never
    /// answered).
    Fatal(String),
}

/// The last `n` lines of a text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl RedisProcess {
    /// Starts `redis-server` (from `bin`) on a free port, without persistence, with keyspace
    /// notifications for expired keys (the emulator journals them as `DEL`), and waits until it
    /// answers PING as itself. A port that turns out taken is replaced by another, up to
    /// [`START_ATTEMPTS`] ports; the error names the ports tried and shows the tail of the
    /// last server log.
    pub fn start(bin: &str) -> io::Result<RedisProcess> {
        let mut tried = Vec::new();
        let mut last = String::new();
        for attempt in 0..START_ATTEMPTS {
            let port = free_port()?;
            tried.push(port.to_string());
            match RedisProcess::start_on(bin, port, attempt) {
                Ok(p) => return Ok(p),
                Err(Attempt::PortTaken(why)) => {
                    log::warn!("backend redis-server on port {port}, trying another port: {why}");
                    last = why;
                }
                Err(Attempt::Fatal(why)) => {
                    return Err(io::Error::other(format!(
                        "redis-server ({bin}) on port {port} did not start: {why}"
                    )))
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "redis-server ({bin}) did not start after {START_ATTEMPTS} ports ({}): {last}",
                tried.join(", ")
            ),
        ))
    }

    /// One attempt on `port`, in a fresh directory holding the server's log.
    fn start_on(bin: &str, port: u16, attempt: usize) -> Result<RedisProcess, Attempt> {
        let dir = std::env::temp_dir().join(format!(
            "dfly-emulator-redis-{}-{port}-{attempt}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Attempt::Fatal(format!("cannot create {}: {e}", dir.display())))?;
        let log = dir.join("redis.log");
        let spawned = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--notify-keyspace-events", "Ex", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Attempt::Fatal(format!("cannot run {bin}: {e}")));
            }
        };
        let pid = child.id();
        CHILDREN.lock().push((child, dir.clone()));
        let p = RedisProcess {
            pid,
            addr: format!("127.0.0.1:{port}"),
            dir,
        };
        // On any error `p` is dropped: the child is killed and its directory removed, after
        // its log was read into the error.
        p.wait_ready(&log, READY_LIMIT).map(|()| p)
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's directory (its working directory and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's exit status, if it exited.
    fn try_wait(&self) -> Option<std::process::ExitStatus> {
        CHILDREN
            .lock()
            .iter_mut()
            .find(|(c, _)| c.id() == self.pid)
            .and_then(|(c, _)| c.try_wait().ok().flatten())
    }

    /// Waits until the server on our port answers PING and says it is our child.
    fn wait_ready(&self, log: &Path, limit: Duration) -> Result<(), Attempt> {
        let deadline = Instant::now() + limit;
        let pid = self.pid;
        let read_log = || tail(&std::fs::read_to_string(log).unwrap_or_default(), 15);
        loop {
            if let Some(status) = self.try_wait() {
                let text = read_log();
                // The directory goes with `self`: quote the log rather than name its path.
                let why = format!("exited with {status}; its log:\n{text}");
                // "Could not create server TCP listening socket ...: bind: Address already in use"
                return Err(if text.contains("Address already in use") {
                    Attempt::PortTaken(why)
                } else {
                    Attempt::Fatal(why)
                });
            }
            match server_pid(&self.addr) {
                Some(p) if p == pid => return Ok(()),
                // Somebody else's server holds the port; ours will fail to bind and exit.
                Some(other) => {
                    return Err(Attempt::PortTaken(format!(
                        "{} is served by process {other}, not by our redis-server {pid}",
                        self.addr
                    )))
                }
                None => {}
            }
            if Instant::now() > deadline {
                return Err(Attempt::Fatal(format!(
                    "no answer on {} within {} s; its log:\n{}",
                    self.addr,
                    limit.as_secs(),
                    read_log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The `process_id` of the redis-server answering on `addr`, if one answers.
fn server_pid(addr: &str) -> Option<u32> {
    let mut c = Backend::connect(addr).ok()?;
    let _ = c.stream().set_read_timeout(Some(Duration::from_secs(5)));
    let v = c.call(&[&b"INFO"[..], b"server"]).ok()?;
    let text = std::str::from_utf8(v.as_bytes()?).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|n| n.trim().parse().ok())
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let child = {
            let mut all = CHILDREN.lock();
            all.iter()
                .position(|(c, _)| c.id() == self.pid)
                .map(|i| all.swap_remove(i).0)
        };
        // Absent when the signal path already stopped it.
        if let Some(c) = child {
            stop(c, &self.dir);
        }
    }
}

/// One blocking connection to the backing server.
pub struct Backend {
    stream: TcpStream,
    rbuf: ReadBuf,
    out: Vec<u8>,
}

impl Backend {
    /// Connects (5 s limit) with TCP_NODELAY.
    pub fn connect(addr: &str) -> io::Result<Backend> {
        let sa = addr.parse().or_else(|_| {
            use std::net::ToSocketAddrs;
            addr.to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))
        })?;
        let stream = TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Ok(Backend {
            stream,
            rbuf: ReadBuf::default(),
            out: Vec::new(),
        })
    }

    /// Encodes one command into the output buffer without sending it.
    pub fn queue<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let mut ib = itoa::Buffer::new();
        self.out.push(b'*');
        self.out.extend_from_slice(ib.format(args.len()).as_bytes());
        self.out.extend_from_slice(b"\r\n");
        for a in args {
            let a = a.as_ref();
            self.out.push(b'$');
            self.out.extend_from_slice(ib.format(a.len()).as_bytes());
            self.out.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Value> {
        self.rbuf.read_value(&mut self.stream)
    }

    /// Sends one command and reads its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Value> {
        self.queue(args);
        self.flush()?;
        self.read()
    }

    /// Sends many commands in one write and reads all replies.
    pub fn pipeline<A: AsRef<[u8]>>(&mut self, cmds: &[Vec<A>]) -> io::Result<Vec<Value>> {
        for c in cmds {
            self.queue(c);
        }
        self.flush()?;
        (0..cmds.len()).map(|_| self.read()).collect()
    }

    /// The underlying socket (for timeouts and shutdown).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}
