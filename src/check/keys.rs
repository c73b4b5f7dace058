//! Where a key lives on the other side: the config's database mapping and per-db key
//! prefixes, applied forwards (source key → target key) and backwards (target key → the source
//! keys it may have come from).

use crate::config::DbMapping;
use crate::model::DbIndex;
use std::borrow::Cow;

/// The mapping plus the source databases that exist, so a target key can be traced back.
#[derive(Debug, Clone)]
pub struct KeyMap {
    mapping: DbMapping,
    /// Source databases holding keys (all of them, even with a `--db` filter).
    source_dbs: Vec<DbIndex>,
    /// `--db`: only this source database is checked.
    only: Option<DbIndex>,
    /// Target keys starting with this are the replicator's own (checkpoint markers).
    marker_prefix: Vec<u8>,
}

impl KeyMap {
    /// A map over `source_dbs` (those with keys); `only` restricts the check to one db.
    pub fn new(
        mapping: DbMapping,
        source_dbs: Vec<DbIndex>,
        only: Option<DbIndex>,
        marker_prefix: &str,
    ) -> KeyMap {
        KeyMap {
            mapping,
            source_dbs,
            only,
            marker_prefix: marker_prefix.as_bytes().to_vec(),
        }
    }

    /// Where a source key lives on the target: the mapped db, and the key with the db's key
    /// prefix (borrowed, no copy, when there is no prefix).
    pub fn target_key<'k>(&self, db: DbIndex, key: &'k [u8]) -> (DbIndex, Cow<'k, [u8]>) {
        let tdb = self.mapping.target_db(db);
        match self.mapping.key_prefix(db) {
            Some(p) => {
                let mut k = Vec::with_capacity(p.len() + key.len());
                k.extend_from_slice(p);
                k.extend_from_slice(key);
                (tdb, Cow::Owned(k))
            }
            None => (tdb, Cow::Borrowed(key)),
        }
    }

    /// The source databases that are checked: `--db` or every one with keys.
    pub fn checked_source_dbs(&self) -> Vec<DbIndex> {
        match self.only {
            Some(d) => vec![d],
            None => self.source_dbs.clone(),
        }
    }

    /// Target databases to scan for extra keys: the images of the checked source dbs, plus
    /// (without `--db`) every target db that holds keys.
    pub fn target_dbs(&self, target_dbs_with_keys: &[DbIndex]) -> Vec<DbIndex> {
        let mut v: Vec<DbIndex> = self
            .checked_source_dbs()
            .into_iter()
            .map(|d| self.mapping.target_db(d))
            .collect();
        if self.only.is_none() {
            v.extend_from_slice(target_dbs_with_keys);
        }
        v.sort();
        v.dedup();
        v
    }

    /// What a target key is, traced back: `None` = not the checker's business (a checkpoint
    /// marker, or a key of a source db excluded by `--db`); `Some(vec![])` = no source db can
    /// have produced it (an extra key outright); otherwise the candidate source keys.
    pub fn to_source(&self, tdb: DbIndex, tkey: &[u8]) -> Option<Vec<(DbIndex, Vec<u8>)>> {
        if self.is_marker(tkey) {
            return None;
        }
        let mut out = Vec::new();
        for s in self.dbs_mapped_to(tdb) {
            match self.mapping.key_prefix(s) {
                Some(p) => {
                    if let Some(rest) = tkey.strip_prefix(p) {
                        out.push((s, rest.to_vec()));
                    }
                }
                None => out.push((s, tkey.to_vec())),
            }
        }
        // The most specific reading first (longest prefix stripped): an extra key is reported
        // under it.
        out.sort_by_key(|(_, k)| k.len());
        if let Some(o) = self.only {
            if !out.iter().any(|(s, _)| *s == o) {
                return None;
            }
            out.retain(|(s, _)| *s == o);
        }
        Some(out)
    }

    /// The source dbs whose keys land in target db `tdb`: the mapped source dbs, plus an
    /// empty source db with the same index (identity mapping: a key there is extra, but it
    /// belongs to that db) and the `--db` filter's db when it maps here.
    fn dbs_mapped_to(&self, tdb: DbIndex) -> Vec<DbIndex> {
        let mut dbs: Vec<DbIndex> = self
            .source_dbs
            .iter()
            .copied()
            .filter(|&s| self.mapping.target_db(s) == tdb)
            .collect();
        for d in [Some(tdb), self.only].into_iter().flatten() {
            if self.mapping.target_db(d) == tdb && !dbs.contains(&d) {
                dbs.push(d);
            }
        }
        dbs
    }

    /// True for the replicator's own marker keys on the target (never extra).
    pub fn is_marker(&self, tkey: &[u8]) -> bool {
        !self.marker_prefix.is_empty() && tkey.starts_with(&self.marker_prefix)
    }

    /// The source db whose keys have the same names in target db `tdb`, when that is the
    /// only reading of every (non-marker) key there: [`KeyMap::to_source`] would answer
    /// `[(db, key)]` for each. `None` when prefixes or several dbs are involved.
    pub fn same_name_source(&self, tdb: DbIndex) -> Option<DbIndex> {
        match self.dbs_mapped_to(tdb).as_slice() {
            [db] if self.mapping.key_prefix(*db).is_none()
                && self.only.map_or(true, |o| o == *db) =>
            {
                Some(*db)
            }
            _ => None,
        }
    }

    /// The prefix of a source db's keys on the target, if any.
    pub fn prefix(&self, db: DbIndex) -> Option<&[u8]> {
        self.mapping.key_prefix(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn mapping(yaml_extra: &str, cluster: bool) -> DbMapping {
        let t = if cluster {
            "target: {type: redis-cluster, seeds: ['127.0.0.1:7000']}"
        } else {
            "target: {type: redis-standalone, addr: '127.0.0.1:6380'}"
        };
        let y = format!("source: {{addr: '127.0.0.1:6379'}}\n{t}\n{yaml_extra}");
        Config::from_yaml_str(&y, "t").unwrap().databases
    }

    #[test]
    fn identity_round_trip() {
        let m = KeyMap::new(
            mapping("", false),
            vec![DbIndex(0), DbIndex(2)],
            None,
            "ck:",
        );
        assert_eq!(
            m.target_key(DbIndex(2), b"k"),
            (DbIndex(2), Cow::Borrowed(&b"k"[..]))
        );
        assert_eq!(
            m.to_source(DbIndex(2), b"k"),
            Some(vec![(DbIndex(2), b"k".to_vec())])
        );
        assert_eq!(m.to_source(DbIndex(0), b"ck:1"), None);
        // db 5 is empty on the source: its target keys trace back to it (and are extra).
        assert_eq!(
            m.to_source(DbIndex(5), b"k"),
            Some(vec![(DbIndex(5), b"k".to_vec())])
        );
    }

    #[test]
    fn prefixes_and_filter_in_a_cluster() {
        let m = mapping("databases: {key_prefix: {1: 'one:', 2: 'two:'}}", true);
        let km = KeyMap::new(m, vec![DbIndex(0), DbIndex(1), DbIndex(2)], None, "");
        assert_eq!(
            km.target_key(DbIndex(1), b"k"),
            (DbIndex(0), Cow::Owned(b"one:k".to_vec()))
        );
        let c = km.to_source(DbIndex(0), b"two:k").unwrap();
        assert!(c.contains(&(DbIndex(2), b"k".to_vec())));
        assert!(c.contains(&(DbIndex(0), b"two:k".to_vec())));
        let only1 = KeyMap::new(
            mapping("databases: {key_prefix: {1: 'one:', 2: 'two:'}}", true),
            vec![DbIndex(0), DbIndex(1), DbIndex(2)],
            Some(DbIndex(1)),
            "",
        );
        assert_eq!(only1.to_source(DbIndex(0), b"two:k"), None);
        assert_eq!(
            only1.to_source(DbIndex(0), b"one:k"),
            Some(vec![(DbIndex(1), b"k".to_vec())])
        );
    }
}
