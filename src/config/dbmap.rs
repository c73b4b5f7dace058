//! Source database → target database mapping (`databases` section): which target db and key
//! prefix each source db's keys get, whether a source db is replicated at all (a Redis Cluster
//! has only db 0), and the rewrite of a command batch into its target form ([`DbMapping::apply`]).
//!
//! Rules (also in `docs/cluster-commands.md`):
//! * standalone: every db keeps its index unless `map` moves it; `key_prefix` is optional;
//! * cluster: db 0 → db 0 unprefixed unless `map` sends another db there unprefixed ("choose
//!   one db"); any other db needs a `key_prefix` or a `map` entry, or it is *unmapped*;
//! * two source dbs never share a target db without distinct, prefix-free key prefixes.
//!
//! Pure: no I/O. [`DbMapping::check_keyspace`] reads an `INFO keyspace` reply the caller got.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{escape_bytes, Cmd, DbIndex};
use crate::route::split::prefix_keys;

/// Where each source database's keys go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbMapping {
    /// The target is a cluster: every database maps to db 0.
    pub(super) cluster: bool,
    /// Explicit source → target entries; other databases keep their index (standalone).
    pub(super) map: BTreeMap<DbIndex, DbIndex>,
    /// Per-source-db key prefix (the way to keep databases apart in a cluster).
    pub(super) key_prefix: BTreeMap<DbIndex, Vec<u8>>,
}

/// A source db with the prefix its keys get in some target db.
type Landing<'a> = (DbIndex, Option<&'a [u8]>);

/// A source db that is not replicated (cluster target without a mapping for it), or a
/// command that cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError(pub String);

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MapError {}

/// Deletes, with `UNLINK`, the keys of the current db that start with one of `ARGV[2..]`
/// (`ARGV[1]` = "only") or with none of them (`ARGV[1]` = "except"): the `FLUSHDB` of one
/// source db when several share a target db. No declared keys and no shebang, so Redis runs
/// it in compatibility mode, where keys of any slot of the node may be touched; on a cluster
/// it runs on every master (SCAN only returns the node's own keys).
const FLUSH_PREFIX_LUA: &str = r#"
local only = ARGV[1] == "only"
local cursor = "0"
local n = 0
repeat
  local r = redis.call("SCAN", cursor, "COUNT", 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    local hit = false
    for i = 2, #ARGV do
      if string.sub(k, 1, #ARGV[i]) == ARGV[i] then hit = true break end
    end
    if hit == only then redis.call("UNLINK", k) n = n + 1 end
  end
until cursor == "0"
return n
"#;

impl DbMapping {
    /// Identity mapping without prefixes.
    pub fn identity(cluster: bool) -> DbMapping {
        DbMapping {
            cluster,
            map: BTreeMap::new(),
            key_prefix: BTreeMap::new(),
        }
    }

    /// The target database for keys of source database `src` (0 on a cluster; use
    /// [`DbMapping::route`] to know whether `src` is replicated at all).
    pub fn target_db(&self, src: DbIndex) -> DbIndex {
        if self.cluster {
            return DbIndex(0);
        }
        self.map.get(&src).copied().unwrap_or(src)
    }

    /// The prefix put in front of every key of source database `src`, if any.
    pub fn key_prefix(&self, src: DbIndex) -> Option<&[u8]> {
        self.key_prefix.get(&src).map(Vec::as_slice)
    }

    /// The explicit mapping entries.
    pub fn explicit(&self) -> &BTreeMap<DbIndex, DbIndex> {
        &self.map
    }

    /// All configured prefixes.
    pub fn prefixes(&self) -> &BTreeMap<DbIndex, Vec<u8>> {
        &self.key_prefix
    }

    /// True for a cluster target.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Some source db other than 0 is sent unprefixed into the target's db 0 by `map`
    /// (cluster: "choose one db"), which takes db 0's place.
    fn db0_replaced(&self) -> bool {
        self.map
            .iter()
            .any(|(s, d)| s.0 != 0 && d.0 == 0 && !self.key_prefix.contains_key(s) && self.cluster)
    }

    /// Whether source db `src` is replicated, and where: `(target db, prefix)`.
    pub fn route(&self, src: DbIndex) -> Result<(DbIndex, Option<&[u8]>), MapError> {
        let prefix = self.key_prefix(src);
        if !self.cluster {
            return Ok((self.target_db(src), prefix));
        }
        let mapped =
            prefix.is_some() || self.map.contains_key(&src) || (src.0 == 0 && !self.db0_replaced());
        if mapped {
            Ok((DbIndex(0), prefix))
        } else {
            Err(MapError(format!(
                "source {src} is not replicated: Redis Cluster has only db 0; give it a key \
                 prefix (`databases.key_prefix: {{{}: \"db{}:\"}}`) or choose it as the one db \
                 (`databases.map: {{{}: 0}}`)",
                src.0, src.0, src.0
            )))
        }
    }

    /// Checks the mapping itself: no prefix may hold a brace (it would change the keys'
    /// hashtags), and no two *configured* source dbs (map keys, prefixed dbs, and db 0 on a
    /// cluster) may land in one target db without distinct prefixes none of which starts
    /// another. Dbs the configuration does not name are checked at start, against the
    /// source's keyspace ([`DbMapping::check_keyspace`]).
    pub fn validate(&self) -> Result<(), String> {
        for (db, p) in &self.key_prefix {
            if p.contains(&b'{') || p.contains(&b'}') {
                return Err(format!(
                    "key_prefix of {db} ({}) contains a brace: it would change the keys' \
                     hashtags (cluster slots)",
                    escape_bytes(p)
                ));
            }
        }
        let mut dbs: Vec<DbIndex> = self
            .map
            .keys()
            .chain(self.key_prefix.keys())
            .copied()
            .collect();
        if self.cluster {
            dbs.push(DbIndex(0));
        }
        self.clashes(dbs)
    }

    /// Two of `dbs` (those replicated) landing in one target db with keys that could
    /// collide: both unprefixed, or one prefix starting another.
    fn clashes(&self, mut dbs: Vec<DbIndex>) -> Result<(), String> {
        dbs.sort();
        dbs.dedup();
        let mut by_target: BTreeMap<DbIndex, Vec<Landing<'_>>> = BTreeMap::new();
        for db in dbs {
            if let Ok((t, p)) = self.route(db) {
                by_target.entry(t).or_default().push((db, p));
            }
        }
        for (t, srcs) in &by_target {
            for (i, (a, pa)) in srcs.iter().enumerate() {
                for (b, pb) in srcs.iter().skip(i + 1) {
                    let clash = match (pa, pb) {
                        (None, None) => true,
                        (Some(x), Some(y)) => x.starts_with(y) || y.starts_with(x),
                        // One unprefixed db next to prefixed ones is allowed (db 0 beside
                        // `db1:`…): its FLUSHDB spares the others' prefixes; a key of the
                        // unprefixed db that starts with another's prefix is the user's choice.
                        _ => false,
                    };
                    if clash {
                        return Err(format!(
                            "source {a} and {b} both land in target {t} with {}: give them \
                             distinct key prefixes (`databases.key_prefix`) that do not start \
                             with one another",
                            if pa.is_none() && pb.is_none() {
                                "no key prefix"
                            } else {
                                "overlapping key prefixes"
                            }
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuses a source whose `INFO keyspace` (`info`, the reply's text) lists a db with keys
    /// that this mapping does not replicate.
    pub fn check_keyspace(&self, info: &[u8]) -> Result<(), MapError> {
        let unmapped: Vec<String> = keyspace_dbs(info)
            .into_iter()
            .filter_map(|db| self.route(db).err().map(|_| db.0.to_string()))
            .collect();
        if unmapped.is_empty() {
            return self.clashes(keyspace_dbs(info)).map_err(|e| {
                MapError(format!(
                    "the source's databases with keys collide on the target: {e}"
                ))
            });
        }
        Err(MapError(format!(
            "the source has keys in db {} but the target is a Redis Cluster (db 0 only) and \
             the configuration maps no key prefix for them: add \
             `databases.key_prefix: {{{}: \"db{}:\", …}}` (or `databases.map: {{N: 0}}` to \
             replicate one chosen db)",
            unmapped.join(", "),
            unmapped[0],
            unmapped[0]
        )))
    }

    /// The source dbs the configuration names (map keys and values, prefixed dbs) plus db 0:
    /// the only ones that can share a target db (any other db keeps its own index).
    fn mentioned(&self) -> Vec<DbIndex> {
        let mut dbs: Vec<DbIndex> = self
            .map
            .keys()
            .chain(self.map.values())
            .chain(self.key_prefix.keys())
            .copied()
            .collect();
        dbs.push(DbIndex(0));
        dbs.sort();
        dbs.dedup();
        dbs
    }

    /// The source dbs that share `target` with `src` (their prefixes), `src` excluded.
    fn neighbours(&self, src: DbIndex, target: DbIndex) -> Vec<Option<&[u8]>> {
        self.mentioned()
            .into_iter()
            .filter(|d| *d != src)
            .filter_map(|d| match self.route(d) {
                Ok((t, p)) if t == target => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Rewrites the commands of one item of source db `src` for the target: returns the
    /// target db and the commands with every key prefixed, `FLUSHDB` narrowed to the db's own
    /// keys when other dbs share its target db, and `MOVE k n` turned into its target form.
    /// An item without commands (PING, skipped) is never refused.
    pub fn apply(&self, src: DbIndex, cmds: Vec<Cmd>) -> Result<(DbIndex, Vec<Cmd>), MapError> {
        if cmds.is_empty() {
            return Ok((self.route(src).map(|r| r.0).unwrap_or_default(), cmds));
        }
        let (target, prefix) = self.route(src)?;
        let plain = prefix.is_none() && self.map.is_empty() && !self.cluster;
        if plain {
            // Identity standalone mapping: nothing to change (the common case, no copy).
            return Ok((target, cmds));
        }
        let mut out = Vec::with_capacity(cmds.len());
        for c in cmds {
            // No allocation per command: this runs for every command of a cluster target.
            let name = c.name();
            if name.eq_ignore_ascii_case(b"FLUSHDB") {
                out.push(self.flushdb(src, target, prefix));
            } else if name.eq_ignore_ascii_case(b"MOVE") {
                out.push(self.move_cmd(src, target, prefix, &c)?);
            } else if let Some(p) = prefix {
                out.push(prefix_keys(&c, p).map_err(|e| {
                    MapError(format!("{src} with key prefix {}: {e}", escape_bytes(p)))
                })?);
            } else {
                out.push(c);
            }
        }
        Ok((target, out))
    }

    /// `FLUSHDB` of `src`: as is when `src` is alone in its target db, else a script deleting
    /// only its keys (by its prefix, or: starting with none of the neighbours' prefixes).
    fn flushdb(&self, src: DbIndex, target: DbIndex, prefix: Option<&[u8]>) -> Cmd {
        let others = self.neighbours(src, target);
        if others.iter().all(Option::is_none) && prefix.is_none() {
            // Nothing tells the keys apart: the whole target db is this source db's.
            return Cmd::new("FLUSHDB");
        }
        let mut c = Cmd::new("EVAL");
        c.arg(FLUSH_PREFIX_LUA.as_bytes()).arg(b"0");
        match prefix {
            Some(p) => {
                c.arg(b"only").arg(p);
            }
            None => {
                c.arg(b"except");
                for p in others.into_iter().flatten() {
                    c.arg(p);
                }
            }
        }
        c
    }

    /// `MOVE k n` from `src`: the key moves between two namespaces of the target.
    fn move_cmd(
        &self,
        src: DbIndex,
        target: DbIndex,
        prefix: Option<&[u8]>,
        c: &Cmd,
    ) -> Result<Cmd, MapError> {
        let bad = |why: &str| MapError(format!("MOVE from {src}: {why}"));
        let (Some(key), Some(n)) = (c.get(1), c.get(2)) else {
            return Err(bad("needs a key and a db"));
        };
        let dst_db = std::str::from_utf8(n)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .map(DbIndex)
            .ok_or_else(|| bad("the db is not a number"))?;
        let (dst_target, dst_prefix) = self.route(dst_db).map_err(|e| bad(&e.0))?;
        let with = |p: Option<&[u8]>| [p.unwrap_or_default(), key].concat();
        if dst_target == target {
            // Both namespaces in one target db: MOVE = RENAMENX (fails when the destination
            // exists, keeps the TTL). Across slots it routes as a Transfer.
            return Ok(Cmd::from_args([
                &b"RENAMENX"[..],
                &with(prefix),
                &with(dst_prefix),
            ]));
        }
        if prefix != dst_prefix {
            return Err(bad(&format!(
                "the key changes prefix and db ({src} → {dst_target}): no single command does \
                 both"
            )));
        }
        let mut m = Cmd::new("MOVE");
        m.arg(&with(prefix)).arg_int(dst_target.0);
        Ok(m)
    }
}

/// The dbs an `INFO keyspace` text lists with at least one key (`db3:keys=10,expires=0,…`).
pub fn keyspace_dbs(info: &[u8]) -> Vec<DbIndex> {
    let text = String::from_utf8_lossy(info);
    text.lines()
        .filter_map(|l| {
            let (db, rest) = l.trim().strip_prefix("db")?.split_once(':')?;
            let keys: u64 = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            (keys > 0).then_some(DbIndex(db.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(cluster: bool, map: &[(u32, u32)], prefixes: &[(u32, &str)]) -> DbMapping {
        DbMapping {
            cluster,
            map: map
                .iter()
                .map(|(a, b)| (DbIndex(*a), DbIndex(*b)))
                .collect(),
            key_prefix: prefixes
                .iter()
                .map(|(a, p)| (DbIndex(*a), p.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn strs(c: &Cmd) -> Vec<String> {
        c.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn cluster_routes() {
        let plain = m(true, &[], &[]);
        assert_eq!(plain.route(DbIndex(0)).unwrap(), (DbIndex(0), None));
        let e = plain.route(DbIndex(2)).unwrap_err();
        assert!(e.0.contains("db 2 is not replicated"), "{e}");
        let p = m(true, &[], &[(1, "one:")]);
        assert_eq!(
            p.route(DbIndex(1)).unwrap(),
            (DbIndex(0), Some(&b"one:"[..]))
        );
        // Choosing db 3: db 0 is no longer replicated unless prefixed.
        let pick = m(true, &[(3, 0)], &[]);
        assert!(pick.route(DbIndex(3)).is_ok());
        assert!(pick.route(DbIndex(0)).is_err());
        let pick0 = m(true, &[(3, 0)], &[(0, "zero:")]);
        assert!(pick0.route(DbIndex(0)).is_ok());
        assert!(pick0.validate().is_ok());
        // Standalone: everything replicated.
        assert_eq!(
            m(false, &[(2, 5)], &[]).route(DbIndex(2)).unwrap(),
            (DbIndex(5), None)
        );
    }

    #[test]
    fn validation() {
        assert!(m(true, &[], &[(1, "a:"), (2, "b:")]).validate().is_ok());
        assert!(m(true, &[], &[(1, "a:"), (2, "a:b:")]).validate().is_err());
        assert!(m(true, &[], &[(1, "{a}")]).validate().is_err());
        assert!(m(true, &[(0, 0), (3, 0)], &[]).validate().is_err());
        assert!(m(false, &[(1, 0), (0, 0)], &[]).validate().is_err());
        assert!(m(false, &[(1, 0), (0, 0)], &[(1, "one:")])
            .validate()
            .is_ok());
        // Unnamed dbs are checked against the keyspace at start.
        let sa = m(false, &[(1, 3)], &[]);
        assert!(sa.validate().is_ok());
        assert!(sa.check_keyspace(b"db1:keys=1,expires=0\r\n").is_ok());
        let e = sa
            .check_keyspace(b"db1:keys=1,expires=0\r\ndb3:keys=2,expires=0\r\n")
            .unwrap_err();
        assert!(
            e.0.contains("db 1 and db 3 both land in target db 3"),
            "{e}"
        );
        assert!(m(false, &[], &[]).validate().is_ok());
    }

    #[test]
    fn keyspace() {
        let info = b"# Keyspace\r\ndb0:keys=5,expires=0,avg_ttl=0\r\ndb2:keys=1,expires=1\r\n";
        assert_eq!(keyspace_dbs(info), vec![DbIndex(0), DbIndex(2)]);
        let e = m(true, &[], &[]).check_keyspace(info).unwrap_err();
        assert!(e.0.contains("keys in db 2"), "{e}");
        assert!(m(true, &[], &[(2, "two:")]).check_keyspace(info).is_ok());
        assert!(m(false, &[], &[]).check_keyspace(info).is_ok());
    }

    #[test]
    fn apply_prefixes_flushes_and_moves() {
        let map = m(true, &[], &[(1, "one:"), (2, "two:")]);
        let (db, cmds) = map
            .apply(
                DbIndex(1),
                vec![Cmd::from_args(["MSET", "a", "1", "b", "2"])],
            )
            .unwrap();
        assert_eq!(db, DbIndex(0));
        assert_eq!(strs(&cmds[0]), ["MSET", "one:a", "1", "one:b", "2"]);
        let (_, f) = map
            .apply(DbIndex(1), vec![Cmd::from_args(["FLUSHDB"])])
            .unwrap();
        assert_eq!(strs(&f[0])[0], "EVAL");
        assert_eq!(&strs(&f[0])[2..], ["0", "only", "one:"]);
        let (_, f) = map
            .apply(DbIndex(0), vec![Cmd::from_args(["FLUSHDB"])])
            .unwrap();
        assert_eq!(&strs(&f[0])[2..], ["0", "except", "one:", "two:"]);
        let (_, mv) = map
            .apply(DbIndex(1), vec![Cmd::from_args(["MOVE", "k", "2"])])
            .unwrap();
        assert_eq!(strs(&mv[0]), ["RENAMENX", "one:k", "two:k"]);
        let (_, mv) = map
            .apply(DbIndex(0), vec![Cmd::from_args(["MOVE", "k", "1"])])
            .unwrap();
        assert_eq!(strs(&mv[0]), ["RENAMENX", "k", "one:k"]);
        assert!(map
            .apply(DbIndex(1), vec![Cmd::from_args(["MOVE", "k", "5"])])
            .is_err());
        assert!(map
            .apply(DbIndex(5), vec![Cmd::from_args(["SET", "k", "v"])])
            .is_err());
        // Nothing to write is never refused.
        assert!(map.apply(DbIndex(5), Vec::new()).is_ok());
        // Standalone identity: untouched; standalone with a moved db: MOVE's db translated.
        let sa = m(false, &[(2, 4), (4, 2)], &[]);
        assert!(sa.validate().is_ok());
        let (db, mv) = sa
            .apply(DbIndex(1), vec![Cmd::from_args(["MOVE", "k", "2"])])
            .unwrap();
        assert_eq!(db, DbIndex(1));
        assert_eq!(strs(&mv[0]), ["MOVE", "k", "4"]);
        let (_, f) = sa
            .apply(DbIndex(2), vec![Cmd::from_args(["FLUSHDB"])])
            .unwrap();
        assert_eq!(strs(&f[0]), ["FLUSHDB"]);
    }
}
