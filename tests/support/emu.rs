//! Emulator-driven end-to-end helpers: the Dragonfly emulator (`dfly-emulator`) with its
//! dataset, the real `df2redis-sync replicate` binary against any target, and the
//! `check --mode full` loop that waits for source and target to compare equal. Every process
//! is a [`Proc`] killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use df2redis_sync::model::Cmd;
use df2redis_sync::net::{Conn, Endpoint};
use df2redis_sync::resp::Value;

/// A child process: SIGTERM on drop, SIGKILL after 5 s.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An emulator with 3 shards (plus `args`), its log in `dir/emulator.log`, its dataset loaded
/// at `scale` (dbs 0, 1, 3 and 7). Returns the process and its address.
pub fn start_emulator(dir: &Path, args: &[&str], scale: &str) -> (Proc, String) {
    let (emu, addr) = start_empty_emulator(dir, args);
    let st = Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
        .args(["load", "--scale", scale, "--target", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "dfly-emulator load");
    (emu, addr)
}

/// An emulator with 3 shards (plus `args`) and no data, its log in `dir/emulator.log`.
pub fn start_empty_emulator(dir: &Path, args: &[&str]) -> (Proc, String) {
    let port = super::free_port(false);
    let emu = Proc(
        Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
            .args(["--port", &port.to_string(), "--shards", "3"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("emulator.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < end, "emulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (emu, addr)
}

/// Writes `dir/replicate.yaml`: source `src`, `target_yaml` (the `target:` section body,
/// indented by two spaces), checkpoints in `dir/ckpt`, and `extra` (more top-level YAML).
pub fn write_config(dir: &Path, src: &str, target_yaml: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("replicate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  addr: {src}\ntarget:\n{target_yaml}checkpoint:\n  dir: {}\n  interval: 1s\n{extra}",
            dir.join("ckpt").display()
        ),
    )
    .unwrap();
    cfg
}

/// The real binary replicating with `cfg`, logging to `log`.
pub fn spawn_replica(cfg: &Path, log: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
            .args(["replicate", cfg.to_str().unwrap(), "--log-file"])
            .arg(log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The emulator's `work` mix (every specially journaled write) in the background.
pub fn spawn_work(addr: &str, rate: &str, ops: &str) -> std::thread::JoinHandle<bool> {
    let (addr, rate, ops) = (addr.to_string(), rate.to_string(), ops.to_string());
    std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
            .args(["work", "--target", &addr, "--rate", &rate, "--ops", &ops])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    })
}

/// Runs `check --mode full` once a second for up to `secs` seconds until it says equal
/// (exit 0); `Err(last report)` otherwise.
pub fn wait_check_equal(cfg: &Path, dir: &Path, secs: u32) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        let out = super::run_bounded(
            Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
                .args(["-q", "check", cfg.to_str().unwrap(), "--mode", "full"])
                .args(["--rounds", "1", "--result-dir"])
                .arg(dir.join("check")),
            Duration::from_secs(30),
        );
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.code() == Some(0) {
            assert!(last.contains("result: equal"), "{last}");
            return Ok(());
        }
    }
    Err(last)
}

/// A plain client connection with test timeouts.
pub fn connect(addr: &str) -> Conn {
    let mut ep = Endpoint::plain(addr);
    ep.connect_timeout = Duration::from_secs(5);
    ep.io_timeout = Some(Duration::from_secs(10));
    Conn::connect(&ep).unwrap()
}

/// Sends one command, panics on an error reply.
pub fn call(c: &mut Conn, args: &[&str]) -> Value {
    let v = c.request(&Cmd::from_args(args)).unwrap();
    assert!(!v.is_error(), "{args:?}: {v:?}");
    v
}

/// Waits until `log` contains `needle` (up to `secs`).
pub fn wait_log(log: &Path, needle: &str, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
