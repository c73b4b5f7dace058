//! The backing redis-server: starting one from `PATH` on a free loopback port (killed when the
//! emulator ends), and a blocking, pipelining client connection to it.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::proto::{ReadBuf, Value};

/// Pids of the redis-server children we started, for the signal handler (which exits without
/// running destructors).
static CHILDREN: parking_lot::Mutex<Vec<(u32, std::path::PathBuf)>> =
    parking_lot::Mutex::new(Vec::new());

/// Terminates every redis-server this process started and removes its directory (signal path).
pub fn kill_registered() {
    for (pid, dir) in CHILDREN.lock().drain(..) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A redis-server child process; killed and reaped on drop.
pub struct RedisProcess {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    _dir: std::path::PathBuf,
}

/// Asks the kernel for a free loopback port.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl RedisProcess {
    /// Starts `redis-server` (from `bin`) on a free port, without persistence, with keyspace
    /// notifications for expired keys (the emulator journals them as `DEL`), and waits until it
    /// answers PING (10 s at most).
    pub fn start(bin: &str) -> io::Result<RedisProcess> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("dfly-emulator-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(bin)
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {bin}: {e}")))?;
        CHILDREN.lock().push((child.id(), dir.clone()));
        let p = RedisProcess {
            child,
            addr: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Backend::connect(&p.addr) {
                if c.call(&[b"PING"])
                    .map(|v| v.as_bytes() == Some(b"PONG"))
                    .unwrap_or(false)
                {
                    return Ok(p);
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "redis-server did not start within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let pid = self.child.id();
        CHILDREN.lock().retain(|(p, _)| *p != pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
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
