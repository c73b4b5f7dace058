//! Dataset loader and workload generator (`dfly-emulator load|work`): a deterministic mix of
//! every type Redis can hold (small/big/integer/binary strings, lists with huge elements,
//! intsets and big sets, zsets with tricky scores, small and huge hashes, streams with
//! consumer groups and pending entries, HyperLogLogs), TTLs, several dbs and a few huge keys,
//! written pipelined; and a scripted write mix at a set rate.

use std::io;
use std::time::{Duration, Instant};

use clap::Args;

use super::backend::Backend;

/// `dfly-emulator load`.
#[derive(Debug, Args)]
pub struct LoadOpts {
    /// Server to fill (the emulator or any Redis).
    #[arg(long, default_value = "127.0.0.1:6390")]
    pub target: String,
    /// Seed of the deterministic generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scale factor: about 1,000 small keys per db and unit, huge keys grow with it.
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// Password for AUTH.
    #[arg(long)]
    pub password: Option<String>,
}

/// `dfly-emulator work`.
#[derive(Debug, Args)]
pub struct WorkOpts {
    /// Server to write to.
    #[arg(long, default_value = "127.0.0.1:6390")]
    pub target: String,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Commands per second (0 = as fast as possible).
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Stop after this many commands.
    #[arg(long, default_value_t = 10_000)]
    pub ops: u64,
    /// Password for AUTH.
    #[arg(long)]
    pub password: Option<String>,
}

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

fn connect(addr: &str, password: &Option<String>) -> io::Result<Backend> {
    let mut be = Backend::connect(addr)?;
    if let Some(p) = password {
        let r = be.call(&[b"AUTH".as_slice(), p.as_bytes()])?;
        if r.is_error() {
            return Err(io::Error::other("AUTH refused"));
        }
    }
    Ok(be)
}

/// Sends commands in pipelined batches and fails on the first error reply.
struct Batch<'a> {
    be: &'a mut Backend,
    cmds: Vec<Vec<Vec<u8>>>,
    sent: u64,
}

impl Batch<'_> {
    fn add<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        self.cmds
            .push(args.iter().map(|a| a.as_ref().to_vec()).collect());
        if self.cmds.len() >= 512 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let cmds = std::mem::take(&mut self.cmds);
        for (r, c) in self.be.pipeline(&cmds)?.iter().zip(&cmds) {
            if r.is_error() {
                return Err(io::Error::other(format!(
                    "{} failed: {:?}",
                    String::from_utf8_lossy(&c[0]),
                    r
                )));
            }
        }
        self.sent += cmds.len() as u64;
        Ok(())
    }
}

/// A far-future absolute TTL (before 2031-01-01, like the recordings' datasets).
fn far_ttl(rng: &mut Rng) -> String {
    (1_900_000_000_000u64 + rng.below(20_000_000_000)).to_string()
}

/// Fills the target with the dataset; returns the number of commands sent.
pub fn load(o: &LoadOpts) -> io::Result<()> {
    let mut be = connect(&o.target, &o.password)?;
    let n = load_into(&mut be, o.seed, o.scale)?;
    log::info!(
        "loaded the dataset (seed {}, scale {}) with {n} commands",
        o.seed,
        o.scale
    );
    Ok(())
}

/// The loader itself, on an open connection.
pub fn load_into(be: &mut Backend, seed: u64, scale: u32) -> io::Result<u64> {
    let mut rng = Rng::new(seed);
    let scale = u64::from(scale.max(1));
    let mut b = Batch {
        be,
        cmds: Vec::new(),
        sent: 0,
    };
    for db in [0u32, 1, 3, 7] {
        b.add(&["SELECT".to_string(), db.to_string()])?;
        let small = if db == 0 { 1000 * scale } else { 100 * scale };
        for i in 0..small {
            let k = format!("str:small:{i}");
            match i % 5 {
                0 => b.add(&[
                    "SET".into(),
                    k,
                    (rng.below(1_000_000) as i64 - 500_000).to_string(),
                ])?,
                1 => {
                    let n = 8 + rng.below(40) as usize;
                    b.add(&[b"SET".to_vec(), k.into_bytes(), rng.bytes(n)])?
                }
                2 => b.add(&[
                    "SET".into(),
                    k,
                    format!("value-{i}"),
                    "PXAT".into(),
                    far_ttl(&mut rng),
                ])?,
                3 => b.add(&["SET".into(), k, "9223372036854775807".into()])?,
                _ => b.add(&["SET".into(), k, "x".repeat(100 + rng.below(400) as usize)])?,
            }
        }
        b.add(&["SET", "str:empty", ""])?;
        b.add(&[b"SET".to_vec(), b"str:big".to_vec(), rng.bytes(20_000)])?;
        for i in 0..(20 * scale) {
            let k = format!("list:small:{i}");
            let mut c = vec!["RPUSH".to_string(), k];
            for j in 0..(1 + rng.below(20)) {
                c.push(if j % 2 == 0 {
                    j.to_string()
                } else {
                    format!("e{j}")
                });
            }
            b.add(&c)?;
            let k = format!("set:int:{i}");
            let mut c = vec!["SADD".to_string(), k];
            for _ in 0..(1 + rng.below(30)) {
                c.push((rng.below(100_000) as i64 - 50_000).to_string());
            }
            b.add(&c)?;
            let k = format!("set:str:{i}");
            let mut c = vec!["SADD".to_string(), k];
            for j in 0..(1 + rng.below(30)) {
                c.push(format!("m{j}-{}", rng.below(1000)));
            }
            b.add(&c)?;
            let k = format!("zset:small:{i}");
            let mut c = vec!["ZADD".to_string(), k];
            for j in 0..(1 + rng.below(20)) {
                c.push(format!("{}", rng.below(100_000) as f64 / 7.0));
                c.push(format!("z{j}"));
            }
            b.add(&c)?;
            let k = format!("hash:small:{i}");
            let mut c = vec!["HSET".to_string(), k];
            for j in 0..(1 + rng.below(20)) {
                c.push(format!("f{j}"));
                c.push(if j % 3 == 0 {
                    j.to_string()
                } else {
                    format!("v{}", rng.below(1000))
                });
            }
            b.add(&c)?;
        }
        b.add(&[
            "ZADD",
            "zset:tricky",
            "-inf",
            "a",
            "-3.5",
            "b",
            "1e-7",
            "c",
            "0.3333333333333333",
            "d",
            "42",
            "e",
            "1.7976931348623157e308",
            "f",
            "inf",
            "g",
        ])?;
        b.add(&[
            "PEXPIREAT".to_string(),
            "zset:tricky".into(),
            far_ttl(&mut rng),
        ])?;
        b.add(&["PFADD", "hll:1", "a", "b", "c", "d"])?;
        if db == 0 {
            // A few huge keys (split into chunks by the snapshot).
            for j in 0..(10 * scale) {
                b.add(&[
                    b"RPUSH".to_vec(),
                    b"list:bigelems".to_vec(),
                    vec![b'a' + (j % 26) as u8; 9001],
                ])?;
            }
            for chunk in 0..(20 * scale) {
                let mut c = vec!["HSET".to_string(), "hash:huge".to_string()];
                for j in 0..1000 {
                    c.push(format!("field:{}", chunk * 1000 + j));
                    c.push(format!("value:{}", rng.below(1_000_000)));
                }
                b.add(&c)?;
            }
            for chunk in 0..(5 * scale) {
                let mut c = vec!["SADD".to_string(), "set:big".to_string()];
                for j in 0..1000 {
                    c.push(format!("member:{}", chunk * 1000 + j));
                }
                b.add(&c)?;
                let mut c = vec!["ZADD".to_string(), "zset:big".to_string()];
                for j in 0..1000 {
                    c.push(format!("{}", (chunk * 1000 + j) as f64 * 1.5));
                    c.push(format!("zm:{}", chunk * 1000 + j));
                }
                b.add(&c)?;
            }
            for i in 0..(1000 * scale) {
                b.add(&[
                    "XADD".to_string(),
                    "stream:main".into(),
                    format!("{}-0", 1000 + i),
                    "f".into(),
                    i.to_string(),
                    "g".into(),
                    "x".into(),
                ])?;
            }
            b.add(&["XDEL", "stream:main", "1003-0"])?;
            b.add(&["XGROUP", "CREATE", "stream:main", "g1", "0"])?;
            b.add(&["XGROUP", "CREATE", "stream:main", "g2", "$"])?;
            b.add(&[
                "XREADGROUP",
                "GROUP",
                "g1",
                "c1",
                "COUNT",
                "10",
                "STREAMS",
                "stream:main",
                ">",
            ])?;
            b.add(&["XACK", "stream:main", "g1", "1000-0", "1001-0"])?;
            b.add(&["XADD", "stream:empty-after-del", "1-1", "a", "b"])?;
            b.add(&["XDEL", "stream:empty-after-del", "1-1"])?;
        }
    }
    b.add(&["SELECT", "0"])?;
    b.flush()?;
    Ok(b.sent)
}

/// Runs the workload; returns the number of commands sent.
pub fn work(o: &WorkOpts) -> io::Result<()> {
    let mut be = connect(&o.target, &o.password)?;
    let n = work_on(&mut be, o.seed, o.rate, o.ops)?;
    log::info!("workload done: {n} commands");
    Ok(())
}

/// The scripted mix: every write the emulator journals specially, and plain ones.
pub fn work_on(be: &mut Backend, seed: u64, rate: u32, ops: u64) -> io::Result<u64> {
    let mut rng = Rng::new(seed.wrapping_add(1000));
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < ops {
        let i = rng.below(50);
        let k = format!("w:{}", rng.below(200));
        let cmd: Vec<String> = match rng.below(22) {
            0 => vec!["SET".into(), k, format!("v{i}"), "EX".into(), "1000".into()],
            1 => vec!["INCRBY".into(), format!("w:cnt:{i}"), "1".into()],
            2 => vec!["INCRBYFLOAT".into(), format!("w:flt:{i}"), "0.5".into()],
            3 => vec!["APPEND".into(), format!("w:app:{i}"), "ab".into()],
            4 => vec!["LPUSH".into(), format!("w:list:{i}"), i.to_string()],
            5 => vec!["RPOP".into(), format!("w:list:{i}")],
            6 => vec![
                "SADD".into(),
                format!("w:set:{i}"),
                rng.below(100).to_string(),
            ],
            7 => vec!["SPOP".into(), format!("w:set:{i}")],
            8 => vec![
                "ZADD".into(),
                format!("w:zset:{i}"),
                rng.below(100).to_string(),
                format!("m{}", rng.below(20)),
            ],
            9 => vec![
                "ZINCRBY".into(),
                format!("w:zset:{i}"),
                "1.5".into(),
                "m1".into(),
            ],
            10 => vec![
                "HSET".into(),
                format!("w:hash:{i}"),
                format!("f{}", rng.below(10)),
                "v".into(),
            ],
            11 => vec![
                "HDEL".into(),
                format!("w:hash:{i}"),
                format!("f{}", rng.below(10)),
            ],
            12 => vec![
                "XADD".into(),
                "w:stream".into(),
                "MAXLEN".into(),
                "~".into(),
                "100".into(),
                "*".into(),
                "a".into(),
                i.to_string(),
            ],
            13 => vec!["EXPIRE".into(), format!("w:cnt:{i}"), "5000".into()],
            14 => vec![
                "DEL".into(),
                format!("w:app:{i}"),
                format!("w:list:{}", rng.below(50)),
            ],
            15 => vec![
                "MSET".into(),
                format!("w:m:{i}"),
                "1".into(),
                format!("w:n:{i}"),
                "2".into(),
            ],
            16 => vec![
                "SMOVE".into(),
                format!("w:set:{i}"),
                format!("w:set:{}", rng.below(50)),
                rng.below(100).to_string(),
            ],
            17 => vec![
                "LMOVE".into(),
                format!("w:list:{i}"),
                format!("w:list:{}", rng.below(50)),
                "LEFT".into(),
                "RIGHT".into(),
            ],
            18 => vec![
                "SET".into(),
                format!("w:short:{i}"),
                "x".into(),
                "PX".into(),
                "50".into(),
            ],
            19 => vec!["GETDEL".into(), format!("w:m:{i}")],
            20 => vec!["PERSIST".into(), format!("w:cnt:{i}")],
            _ => vec!["UNLINK".into(), format!("w:n:{i}")],
        };
        let r = be.call(&cmd)?;
        if matches!(&r, super::proto::Value::Error(e) if !e.starts_with(b"WRONGTYPE")) {
            return Err(io::Error::other(format!("{} failed", cmd[0])));
        }
        sent += 1;
        if rate > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / f64::from(rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    Ok(sent)
}
