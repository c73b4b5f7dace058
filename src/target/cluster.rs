//! Redis Cluster specifics of the target: which node a routed command goes to, the position markers
//! that make a cluster replay exactly-once, the per-flow completion [`Tracker`], and the few
//! blocking node operations the session start and cross-slot transfers need (read, clear
//! markers; flush every master; one request or one `MULTI … EXEC` on a slot's owner).
//!
//! Why markers per (flow, slot) (docs/exactly-once.md, "Redis Cluster"): a `MULTI`/`EXEC` in a
//! cluster cannot span slots (`CROSSSLOT`), so the standalone design (one marker per flow in
//! the batch's transaction) cannot work. Instead the commands of one flow batch are grouped per
//! slot, and each group runs as `MULTI … ZADD <prefix>{<tag>} GT <next> <replid>:<flow> EXEC`
//! where `{<tag>}` hashes to that very slot ([`slot_tag`]). The marker lives in the slot it
//! describes: it moves with the slot's keys on a migration and survives a failover together
//! with them. `ZADD … GT` never lowers a position, so a group redirected (and applied) after a
//! later group of the same slot cannot move the marker back. A per-flow *low-water* position
//! (`<prefix>lowwater`, a hash `flow → <replid>:<next>`) is written only after every node
//! acknowledged everything before it: a resume asks the master for the low-water LSN and skips
//! each command whose slot marker shows it was already applied.
//!
//! A slot marker holds, per flow, a *high-water* position (member `<replid>:<flow>`: every
//! entry of the flow in the slot up to it is applied) and a few *ranges* (members
//! `<replid>:<flow>:s<i>` / `:e<i>`: the entries in `(s, e]` of the slot are applied) that a
//! group writes instead of raising its high-water when an earlier group of the same (flow,
//! slot) was still unacknowledged when it was split: that earlier group may be refused
//! (`ASK`/`TRYAGAIN` during a migration) after the later one ran, and a high-water past it
//! would make a resume skip it (issue 6; [`SlotApplied`], `pipeline::cluster::FlowRouting`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::model::{Cmd, FlowId, Lsn};
use crate::net::{self, Conn, Endpoint};
use crate::resp::{ErrorKind, Value};
use crate::route::split::{self, Routed};
use crate::route::Slot;

use super::topology::{Topology, SLOT_COUNT};
use super::writer::Applied;

/// The tag of each slot: the shortest lowercase-hex string `t` (in counting order 0, 1, …)
/// with `CRC16(t) mod 16384 == slot`. The algorithm is part of the on-target format (marker
/// keys of an earlier run must be found again): never change it.
pub fn slot_tag(slot: u16) -> &'static [u8] {
    static TAGS: OnceLock<Vec<Box<[u8]>>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags: Vec<Option<Box<[u8]>>> = vec![None; usize::from(SLOT_COUNT)];
        let mut left = usize::from(SLOT_COUNT);
        let mut i: u64 = 0;
        while left > 0 {
            let t = format!("{i:x}").into_bytes();
            let s = usize::from(Slot::of_key(&t).get());
            if let Some(e) = tags.get_mut(s) {
                if e.is_none() {
                    *e = Some(t.into_boxed_slice());
                    left -= 1;
                }
            }
            i += 1;
        }
        tags.into_iter().map(Option::unwrap_or_default).collect()
    });
    tags.get(usize::from(slot)).map_or(&[], |t| &t[..])
}

/// Marker key names and commands of a cluster target.
#[derive(Debug, Clone)]
pub struct ClusterMarkers {
    /// Key prefix (config `checkpoint.marker_prefix`); must not contain `{`.
    pub prefix: String,
    /// The master's replication id (positions of another master are never used).
    pub replid: String,
}

impl ClusterMarkers {
    /// `<prefix>{<tag>}`: the marker key living in `slot`.
    pub fn slot_key(&self, slot: u16) -> Vec<u8> {
        let mut k = self.prefix.as_bytes().to_vec();
        k.push(b'{');
        k.extend_from_slice(slot_tag(slot));
        k.push(b'}');
        k
    }

    /// `<replid>:<flow>`: the member of a slot marker holding one flow's position.
    pub fn member(&self, flow: FlowId) -> Vec<u8> {
        let mut m = self.replid.as_bytes().to_vec();
        m.push(b':');
        m.extend_from_slice(itoa::Buffer::new().format(flow.0).as_bytes());
        m
    }

    /// `<replid>:<flow>:s<i>` (`start`) or `<replid>:<flow>:e<i>`: one end of applied range
    /// `i` of a flow in a slot marker.
    pub fn range_member(&self, flow: FlowId, i: u32, start: bool) -> Vec<u8> {
        let mut m = self.member(flow);
        m.extend_from_slice(if start { b":s" } else { b":e" });
        m.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
        m
    }

    /// What a slot-marker member is, when it is this master's: a flow's high-water position,
    /// or one end of one of its applied ranges.
    pub fn parse_member(&self, member: &[u8]) -> Option<Member> {
        let s = std::str::from_utf8(member).ok()?;
        let rest = s.strip_prefix(self.replid.as_str())?.strip_prefix(':')?;
        let (f, range) = match rest.split_once(':') {
            Some((f, r)) => (f, Some(r)),
            None => (rest, None),
        };
        let flow = FlowId(f.parse().ok()?);
        match range {
            None => Some(Member::High(flow)),
            Some(r) => {
                let (start, i) = match r.split_at_checked(1)? {
                    ("s", i) => (true, i),
                    ("e", i) => (false, i),
                    _ => return None,
                };
                Some(Member::Range {
                    flow,
                    i: i.parse().ok()?,
                    start,
                })
            }
        }
    }

    /// `ZADD <prefix>{<tag>} GT <next> <replid>:<flow>`: never lowers the position.
    pub fn zadd(&self, slot: u16, flow: FlowId, next: Lsn) -> Cmd {
        let mut c = Cmd::new("ZADD");
        c.arg(&self.slot_key(slot))
            .arg(b"GT")
            .arg_int(next.0)
            .arg(&self.member(flow));
        c
    }

    /// `ZADD <prefix>{<tag>} GT <high> <replid>:<flow> <start> …:s<i> <end> …:e<i>`: raises the
    /// flow's high-water to `high` (never lowers it) and records `(start, end]` as applied
    /// range `i`. `GT` adds missing members; an existing range `i` is replaced only by a later
    /// one (both ends greater), which is how ranges are reused (`FlowRouting::marker`).
    pub fn zadd_range(
        &self,
        slot: u16,
        flow: FlowId,
        high: Lsn,
        i: u32,
        (start, end): (Lsn, Lsn),
    ) -> Cmd {
        let mut c = self.zadd(slot, flow, high);
        c.arg_int(start.0)
            .arg(&self.range_member(flow, i, true))
            .arg_int(end.0)
            .arg(&self.range_member(flow, i, false));
        c
    }

    /// `<prefix>lowwater`.
    pub fn lowwater_key(&self) -> Vec<u8> {
        let mut k = self.prefix.as_bytes().to_vec();
        k.extend_from_slice(b"lowwater");
        k
    }

    /// `HSET <prefix>lowwater <flow> <replid>:<next> …`.
    pub fn lowwater_cmd(&self, positions: &[(FlowId, Lsn)]) -> Cmd {
        let mut c = Cmd::new("HSET");
        c.arg(&self.lowwater_key());
        for (f, l) in positions {
            c.arg_int(f.0);
            let mut v = self.replid.as_bytes().to_vec();
            v.push(b':');
            v.extend_from_slice(itoa::Buffer::new().format(l.0).as_bytes());
            c.arg(&v);
        }
        c
    }

    /// Parses the `HGETALL <prefix>lowwater` reply: each flow's low-water position of this
    /// master (`None` where missing or of another master).
    pub fn parse_lowwater(&self, reply: &Value, flows: u32) -> Vec<Option<Lsn>> {
        let mut out = vec![None; flows as usize];
        let Some(pairs) = reply.to_pairs() else {
            return out;
        };
        for (k, v) in pairs {
            let (Some(k), Some(v)) = (k.as_bytes(), v.as_bytes()) else {
                continue;
            };
            let Some(f) = std::str::from_utf8(k)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((id, n)) = std::str::from_utf8(v).ok().and_then(|s| s.rsplit_once(':')) else {
                continue;
            };
            if id != self.replid {
                continue;
            }
            if let (Some(slot), Ok(n)) = (out.get_mut(f as usize), n.parse::<u64>()) {
                *slot = Some(Lsn(n));
            }
        }
        out
    }

    /// `SCAN … MATCH` pattern of every marker key (the prefix with glob characters escaped).
    pub fn scan_pattern(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.prefix.len() + 1);
        for &b in self.prefix.as_bytes() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                p.push(b'\\');
            }
            p.push(b);
        }
        p.push(b'*');
        p
    }
}

/// A member of a slot marker ([`ClusterMarkers::parse_member`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// `<replid>:<flow>`: the flow's high-water position in the slot.
    High(FlowId),
    /// `<replid>:<flow>:s<i>` / `:e<i>`: the start (exclusive) / end (inclusive) of applied
    /// range `i` of the flow in the slot.
    Range {
        /// The flow.
        flow: FlowId,
        /// The range's index.
        i: u32,
        /// `s` (start) rather than `e` (end).
        start: bool,
    },
}

/// At most this many applied ranges per (flow, slot) are read back (a flow keeps one per
/// group of the slot that was unacknowledged when a later one was split: a handful).
pub const MAX_RANGES: usize = 4096;

/// What a slot marker says one flow applied in its slot: every entry ending at or before
/// `high`, and every entry ending inside one of `ranges` (`(start, end]`, by range index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotApplied {
    /// High-water position.
    pub high: Lsn,
    /// Applied ranges `(start, end]`; the index is the range's member number (`None`: no
    /// complete range under that number).
    pub ranges: Vec<Option<(Lsn, Lsn)>>,
}

impl SlotApplied {
    /// Only a high-water position.
    pub fn high(high: Lsn) -> SlotApplied {
        SlotApplied {
            high,
            ranges: Vec::new(),
        }
    }

    /// True when the entry ending at `end` is applied in this slot.
    pub fn covers(&self, end: Lsn) -> bool {
        end <= self.high
            || self
                .ranges
                .iter()
                .flatten()
                .any(|&(s, e)| s < end && end <= e)
    }

    /// The largest position it says anything about.
    pub fn max(&self) -> Lsn {
        self.ranges
            .iter()
            .flatten()
            .map(|&(_, e)| e)
            .fold(self.high, Lsn::max)
    }

    /// Sets range `i` to `(start, end]` (as read from the target; an empty or reversed one
    /// is no range, an index past [`MAX_RANGES`] is ignored).
    pub fn set_range(&mut self, i: u32, start: Lsn, end: Lsn) {
        let i = i as usize;
        if i >= MAX_RANGES {
            return;
        }
        if self.ranges.len() <= i {
            self.ranges.resize(i + 1, None);
        }
        if let Some(r) = self.ranges.get_mut(i) {
            *r = (start < end).then_some((start, end));
        }
    }
}

/// Where a routed command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// The owner of this slot.
    Slot(u16),
    /// Every master (keyless commands such as `SCRIPT LOAD`, `FUNCTION LOAD`).
    AllMasters,
}

/// Where a single-slot command (as `route::split` leaves them) goes: its slot, or every
/// master when it has no key (`SCRIPT LOAD`, `FUNCTION LOAD`). A command that is not
/// single-slot (the caller split or refused it before) goes by its first argument's slot.
pub fn dest(cmd: &Cmd) -> Dest {
    match split::split(cmd) {
        Routed::Single(s) => Dest::Slot(s.get()),
        Routed::Keyless => Dest::AllMasters,
        Routed::Split(parts) => Dest::Slot(parts.first().map_or(0, |(s, _)| s.get())),
        Routed::Transfer(t) => Dest::Slot(Slot::of_key(&t.src).get()),
        Routed::Refused { .. } => Dest::Slot(Slot::of_key(cmd.get(1).unwrap_or(&[])).get()),
    }
}

/// Per-flow completion of batches split over several nodes: a flow batch is *applied* once
/// every node part of it and of every earlier batch of the flow was acknowledged; the flow's
/// applied position then becomes the batch's `next`.
pub struct Tracker {
    applied: Arc<Applied>,
    flows: Vec<Mutex<FlowTrack>>,
}

#[derive(Default)]
struct FlowTrack {
    /// Sequence number of the front entry.
    base: u64,
    /// Per batch, oldest first: parts not acknowledged yet, and the position it completes.
    pending: VecDeque<(usize, Option<Lsn>)>,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("lanes", &self.flows.len())
            .finish()
    }
}

impl Tracker {
    /// A tracker with `lanes` lanes (one per flow, plus any the caller uses for itself).
    pub fn new(applied: Arc<Applied>, lanes: usize) -> Tracker {
        Tracker {
            applied,
            flows: (0..lanes)
                .map(|_| Mutex::new(FlowTrack::default()))
                .collect(),
        }
    }

    /// Registers a batch of `parts` node parts; returns its ticket number. A batch of zero
    /// parts completes as soon as everything before it did.
    pub fn register(&self, lane: FlowId, parts: usize, next: Option<Lsn>) -> u64 {
        let Some(t) = self.flows.get(lane.0 as usize) else {
            return 0;
        };
        let mut t = t.lock();
        let seq = t.base + t.pending.len() as u64;
        t.pending.push_back((parts, next));
        self.pop_done(lane, &mut t);
        seq
    }

    /// One part of batch `seq` was acknowledged.
    pub fn complete(&self, lane: FlowId, seq: u64) {
        let Some(t) = self.flows.get(lane.0 as usize) else {
            return;
        };
        let mut t = t.lock();
        let Some(i) = seq.checked_sub(t.base) else {
            return;
        };
        if let Some(e) = t.pending.get_mut(i as usize) {
            e.0 = e.0.saturating_sub(1);
        }
        self.pop_done(lane, &mut t);
    }

    /// The position before which every batch of `lane` was acknowledged by every node.
    pub fn applied(&self, lane: FlowId) -> Lsn {
        self.applied.get(lane)
    }

    /// Batches of `lane` not completely acknowledged.
    pub fn pending(&self, lane: FlowId) -> usize {
        self.flows
            .get(lane.0 as usize)
            .map_or(0, |t| t.lock().pending.len())
    }

    fn pop_done(&self, lane: FlowId, t: &mut FlowTrack) {
        while let Some(&(0, next)) = t.pending.front() {
            t.pending.pop_front();
            t.base += 1;
            if let Some(n) = next {
                self.applied.advance(lane, n);
            }
        }
    }
}

/// A node part of a tracked batch: completing it reports to the [`Tracker`].
#[derive(Clone)]
pub struct Ticket {
    /// The tracker.
    pub tracker: Arc<Tracker>,
    /// Its lane (the flow).
    pub lane: FlowId,
    /// The batch's sequence number in the lane.
    pub seq: u64,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticket({}, {})", self.lane, self.seq)
    }
}

impl Ticket {
    /// Reports this part acknowledged.
    pub fn done(&self) {
        self.tracker.complete(self.lane, self.seq);
    }
}

/// Which node owns each slot: node indexes into an address list that only grows (a node that
/// appears gets the next index; a node that stops being a master keeps its index, unused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOwners {
    /// Node addresses, by index.
    pub nodes: Vec<String>,
    /// Per slot: the owner's index, or `u16::MAX` when no master serves the slot.
    pub owner: Vec<u16>,
}

/// No owner.
pub const NO_OWNER: u16 = u16::MAX;

impl SlotOwners {
    /// Owners from a topology, keeping the indexes of `prev` for known addresses.
    pub fn from_topology(t: &Topology, prev: Option<&SlotOwners>) -> SlotOwners {
        let mut nodes = prev.map(|p| p.nodes.clone()).unwrap_or_default();
        let mut owner = vec![NO_OWNER; usize::from(SLOT_COUNT)];
        for m in &t.masters {
            let idx = match nodes.iter().position(|a| *a == m.addr) {
                Some(i) => i,
                None => {
                    nodes.push(m.addr.clone());
                    nodes.len() - 1
                }
            };
            for r in &m.slots {
                for s in r.start..=r.end {
                    if let Some(o) = owner.get_mut(usize::from(s)) {
                        *o = u16::try_from(idx).unwrap_or(NO_OWNER);
                    }
                }
            }
        }
        SlotOwners { nodes, owner }
    }

    /// The owner index of a slot.
    pub fn owner_of(&self, slot: u16) -> Option<usize> {
        match self.owner.get(usize::from(slot)) {
            Some(&o) if o != NO_OWNER => Some(usize::from(o)),
            _ => None,
        }
    }

    /// Indexes of the nodes that own at least one slot.
    pub fn masters(&self) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        for &o in &self.owner {
            if let Some(s) = seen.get_mut(usize::from(o)) {
                *s = true;
            }
        }
        (0..self.nodes.len()).filter(|&i| seen[i]).collect()
    }
}

/// Flags shared between writers and the coordinator of a cluster session.
#[derive(Debug, Default)]
pub struct TopologyHint {
    /// A writer saw `MOVED` / `READONLY`: the slot map is out of date.
    pub stale: AtomicBool,
}

impl TopologyHint {
    /// Marks the slot map stale.
    pub fn mark(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// Takes the flag.
    pub fn take(&self) -> bool {
        self.stale.swap(false, Ordering::SeqCst)
    }
}

/// Discovers the cluster from the first seed that answers.
pub fn discover_any(seeds: &[Endpoint]) -> Result<Topology, String> {
    let mut last = String::from("no target address");
    for ep in seeds {
        match super::topology::discover(ep) {
            Ok(t) => return Ok(t),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Sends `cmd` for `slot` to its owner, following `MOVED`/`ASK` redirects and waiting out
/// `TRYAGAIN`/`CLUSTERDOWN`/`LOADING` for up to 10 s ([`on_slot_owner`]). Error replies other than redirects
/// are returned as values.
pub fn request_slot(
    seed: &Endpoint,
    owners: &SlotOwners,
    slot: u16,
    cmd: &Cmd,
) -> Result<Value, net::Error> {
    on_slot_owner(seed, owners, slot, |c| c.request(cmd))
}

/// Runs `cmds` for `slot` as one `MULTI … EXEC` on its owner, with the redirects and waits of
/// [`request_slot`]. Returns the `EXEC` reply (one reply per command), or the first error a
/// command got when queued (Redis then aborts the `EXEC`: nothing ran) or `MULTI`/`EXEC`'s own
/// error. A redirect at queue time (`MOVED`/`ASK`: the slot is elsewhere) makes it resend the
/// whole transaction to the node named (`ASKING` first for `ASK`: Redis keeps that flag for
/// the whole `MULTI`, `networking.c resetClient`).
pub fn request_slot_atomic(
    seed: &Endpoint,
    owners: &SlotOwners,
    slot: u16,
    cmds: &[Cmd],
) -> Result<Value, net::Error> {
    on_slot_owner(seed, owners, slot, |c| {
        let (multi, exec) = (Cmd::new("MULTI"), Cmd::new("EXEC"));
        c.send_all(std::iter::once(&multi).chain(cmds).chain([&exec]))?;
        let multi = c.read_reply()?;
        let mut refused = multi.is_error().then_some(multi);
        for _ in cmds {
            let v = c.read_reply()?;
            if refused.is_none() && v.is_error() {
                refused = Some(v);
            }
        }
        let exec = c.read_reply()?;
        Ok(refused.unwrap_or(exec))
    })
}

/// Runs `f` on a fresh connection to the owner of `slot` until its reply is not a redirect
/// or a retry-later error (5 `MOVED`s at once, then more 100 ms apart; 5 `ASK`s; 10 s in all).
fn on_slot_owner(
    seed: &Endpoint,
    owners: &SlotOwners,
    slot: u16,
    mut f: impl FnMut(&mut Conn) -> Result<Value, net::Error>,
) -> Result<Value, net::Error> {
    let mut addr = owners
        .owner_of(slot)
        .and_then(|i| owners.nodes.get(i).cloned())
        .unwrap_or_else(|| seed.addr.clone());
    let mut asking = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut hops = 0;
    loop {
        let mut c = Conn::connect(&seed.with_addr(addr.clone()))?;
        if asking {
            c.request(&Cmd::new("ASKING"))?;
        }
        let v = f(&mut c)?;
        let Some(e) = v.server_error() else {
            return Ok(v);
        };
        hops += 1;
        let in_time = std::time::Instant::now() < deadline;
        match e.kind {
            // While a failover settles, the old and the new master can send each other's
            // clients back and forth for a moment: after a few hops, wait between them (until
            // the deadline) instead of giving up.
            ErrorKind::Moved { addr: a, .. } if hops <= 5 || in_time => {
                if hops > 2 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                addr = fix_addr(&a, &addr);
                asking = false;
            }
            ErrorKind::Ask { addr: a, .. } if hops <= 5 => {
                addr = fix_addr(&a, &addr);
                asking = true;
            }
            ErrorKind::TryAgain | ErrorKind::ClusterDown | ErrorKind::Loading if in_time => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            _ => return Ok(v),
        }
    }
}

/// A redirect address with an empty host (`:7001`) means the host of the node that replied.
pub fn fix_addr(redirect: &str, replier: &str) -> String {
    match redirect.strip_prefix(':') {
        Some(port) => format!("{}:{port}", net::host_of(replier)),
        None => redirect.to_string(),
    }
}

/// Every marker key on one node (`SCAN MATCH <prefix>*`), at most `cap` of them.
pub fn scan_markers(
    conn: &mut Conn,
    markers: &ClusterMarkers,
    cap: usize,
) -> Result<Vec<Vec<u8>>, net::Error> {
    let pattern = markers.scan_pattern();
    let mut cursor = b"0".to_vec();
    let mut keys = Vec::new();
    loop {
        let mut c = Cmd::new("SCAN");
        c.arg(&cursor)
            .arg(b"MATCH")
            .arg(&pattern)
            .arg(b"COUNT")
            .arg(b"1000");
        let v = conn.request_ok(&c)?;
        let parts = v.as_array().unwrap_or(&[]);
        cursor = parts
            .first()
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| b"0".to_vec());
        if let Some(ks) = parts.get(1).and_then(Value::as_array) {
            for k in ks {
                if let Some(b) = k.as_bytes() {
                    if keys.len() < cap {
                        keys.push(b.to_vec());
                    }
                }
            }
        }
        if cursor == b"0" {
            return Ok(keys);
        }
    }
}

/// Per flow: the slot markers of this master found on every master (`slot → applied`).
pub fn read_slot_markers(
    seed: &Endpoint,
    owners: &SlotOwners,
    markers: &ClusterMarkers,
    flows: u32,
) -> Result<Vec<HashMap<u16, SlotApplied>>, net::Error> {
    let mut out: Vec<HashMap<u16, SlotApplied>> = vec![HashMap::new(); flows as usize];
    for i in owners.masters() {
        let Some(addr) = owners.nodes.get(i) else {
            continue;
        };
        let mut c = Conn::connect(&seed.with_addr(addr.clone()))?;
        // Twice the slot count bounds the keys even with foreign prefixes' look-alikes.
        for key in scan_markers(&mut c, markers, 2 * usize::from(SLOT_COUNT) + 16)? {
            let slot = Slot::of_key(&key).get();
            if key != markers.slot_key(slot) {
                continue;
            }
            let mut z = Cmd::new("ZRANGE");
            z.arg(&key).arg(b"0").arg(b"-1").arg(b"WITHSCORES");
            let v = c.request(&z)?;
            let items = v.as_array().unwrap_or(&[]);
            // Range ends by (flow, index): (start, end).
            let mut ranges: HashMap<(u32, u32), (Option<Lsn>, Option<Lsn>)> = HashMap::new();
            for pair in items.chunks_exact(2) {
                let (Some(m), Some(score)) = (pair[0].as_bytes(), pair[1].as_bytes()) else {
                    continue;
                };
                let Some(member) = markers.parse_member(m) else {
                    continue;
                };
                let Some(n) = std::str::from_utf8(score)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|x| x.is_finite() && *x >= 0.0)
                else {
                    continue;
                };
                let n = Lsn(n as u64);
                match member {
                    Member::High(f) => {
                        if let Some(t) = out.get_mut(f.0 as usize) {
                            t.entry(slot).or_default().high = n;
                        }
                    }
                    Member::Range { flow, i, start } => {
                        if (flow.0 as usize) < out.len() && (i as usize) < MAX_RANGES {
                            let r = ranges.entry((flow.0, i)).or_default();
                            *if start { &mut r.0 } else { &mut r.1 } = Some(n);
                        }
                    }
                }
            }
            for ((f, i), ends) in ranges {
                if let (Some(t), (Some(s), Some(e))) = (out.get_mut(f as usize), ends) {
                    t.entry(slot).or_default().set_range(i, s, e);
                }
            }
        }
    }
    Ok(out)
}

/// Deletes every marker key (slot markers and the low-water hash) on every master.
pub fn clear_markers(
    seed: &Endpoint,
    owners: &SlotOwners,
    markers: &ClusterMarkers,
) -> Result<usize, net::Error> {
    let mut n = 0;
    for i in owners.masters() {
        let Some(addr) = owners.nodes.get(i) else {
            continue;
        };
        let mut c = Conn::connect(&seed.with_addr(addr.clone()))?;
        for key in scan_markers(&mut c, markers, usize::MAX)? {
            let mut d = Cmd::new("UNLINK");
            d.arg(&key);
            c.request_ok(&d)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Runs `cmd` (e.g. `FLUSHALL`) on every master.
pub fn on_every_master(seed: &Endpoint, owners: &SlotOwners, cmd: &Cmd) -> Result<(), net::Error> {
    for i in owners.masters() {
        let Some(addr) = owners.nodes.get(i) else {
            continue;
        };
        let mut c = Conn::connect(&seed.with_addr(addr.clone()))?;
        c.request_ok(cmd)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that answers the first `moved` connections with `MOVED` to itself (the old and
    /// new master of a settling failover sending a client back and forth), then `+OK`.
    fn bouncing_node(moved: usize) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let me = addr.clone();
        let h = std::thread::spawn(move || {
            let mut served = 0;
            for conn in l.incoming() {
                let Ok(mut c) = conn else { break };
                let mut buf = [0u8; 512];
                if c.read(&mut buf).unwrap_or(0) == 0 {
                    continue;
                }
                served += 1;
                let answer = if served <= moved {
                    format!("-MOVED 4719 {me}\r\n")
                } else {
                    "+OK\r\n".to_string()
                };
                let _ = c.write_all(answer.as_bytes());
                if served > moved {
                    break;
                }
            }
            served
        });
        (addr, h)
    }

    #[test]
    fn moved_back_and_forth_is_followed_until_the_node_answers() {
        let (addr, h) = bouncing_node(8);
        let owners = SlotOwners {
            nodes: vec![addr.clone()],
            owner: vec![0; SLOT_COUNT as usize],
        };
        let v = request_slot(&Endpoint::plain(addr), &owners, 4719, &Cmd::new("PING")).unwrap();
        assert_eq!(v, Value::Simple("OK".into()), "{v:?}");
        assert_eq!(h.join().unwrap(), 9);
    }

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for s in 0..SLOT_COUNT {
            let t = slot_tag(s);
            assert!(!t.is_empty() && t.len() <= 5, "slot {s}: {t:?}");
            assert_eq!(Slot::of_key(t).get(), s);
        }
        let m = ClusterMarkers {
            prefix: "p:".into(),
            replid: "r".into(),
        };
        assert_eq!(Slot::of_key(&m.slot_key(77)).get(), 77);
        assert_eq!(
            m.parse_member(&m.member(FlowId(3))),
            Some(Member::High(FlowId(3)))
        );
        assert_eq!(
            m.parse_member(&m.range_member(FlowId(3), 7, true)),
            Some(Member::Range {
                flow: FlowId(3),
                i: 7,
                start: true
            })
        );
        assert_eq!(
            m.parse_member(&m.range_member(FlowId(0), 12, false)),
            Some(Member::Range {
                flow: FlowId(0),
                i: 12,
                start: false
            })
        );
        assert_eq!(m.parse_member(b"other:3"), None);
        assert_eq!(m.parse_member(b"r:3:x1"), None);
        assert_eq!(m.parse_member(b"r:3:s"), None);
        assert_eq!(m.parse_member(b"r:x"), None);
        assert_eq!(m.parse_member(b"rr:3"), None);
        let c = m.zadd_range(77, FlowId(2), Lsn(5), 1, (Lsn(8), Lsn(9)));
        let args: Vec<Vec<u8>> = c.args().map(<[u8]>::to_vec).collect();
        let want: Vec<Vec<u8>> = [
            &b"ZADD"[..],
            &m.slot_key(77),
            b"GT",
            b"5",
            b"r:2",
            b"8",
            b"r:2:s1",
            b"9",
            b"r:2:e1",
        ]
        .iter()
        .map(|a| a.to_vec())
        .collect();
        assert_eq!(args, want);
    }

    #[test]
    fn slot_applied_covers_the_high_water_and_the_ranges_only() {
        let mut a = SlotApplied::high(Lsn(10));
        a.set_range(1, Lsn(20), Lsn(30));
        a.set_range(3, Lsn(40), Lsn(40));
        assert_eq!(a.ranges, vec![None, Some((Lsn(20), Lsn(30))), None, None]);
        assert!(a.covers(Lsn(10)) && a.covers(Lsn(1)));
        assert!(
            !a.covers(Lsn(11)) && !a.covers(Lsn(20)),
            "a refused group before 20"
        );
        assert!(a.covers(Lsn(21)) && a.covers(Lsn(30)));
        assert!(!a.covers(Lsn(31)) && !a.covers(Lsn(41)));
        assert_eq!(a.max(), Lsn(30));
        // Absurd indexes are ignored rather than allocated.
        a.set_range(u32::MAX, Lsn(1), Lsn(2));
        assert_eq!(a.ranges.len(), 4);
    }

    #[test]
    fn lowwater_round_trip() {
        let m = ClusterMarkers {
            prefix: "p:".into(),
            replid: "r".into(),
        };
        let c = m.lowwater_cmd(&[(FlowId(0), Lsn(5)), (FlowId(2), Lsn(9))]);
        let args: Vec<Value> = c.args().skip(2).map(|a| Value::Bulk(a.to_vec())).collect();
        let got = m.parse_lowwater(&Value::Array(args), 3);
        assert_eq!(got, vec![Some(Lsn(5)), None, Some(Lsn(9))]);
        let foreign = Value::Array(vec![
            Value::Bulk(b"0".to_vec()),
            Value::Bulk(b"x:5".to_vec()),
            Value::Bulk(b"7".to_vec()),
            Value::Bulk(b"r:1".to_vec()),
        ]);
        assert_eq!(m.parse_lowwater(&foreign, 1), vec![None]);
    }

    #[test]
    fn destinations() {
        assert_eq!(
            dest(&Cmd::from_args(["SET", "foo", "1"])),
            Dest::Slot(12182)
        );
        assert_eq!(
            dest(&Cmd::from_args(["EVAL", "return 1", "1", "foo", "x"])),
            Dest::Slot(12182)
        );
        assert_eq!(
            dest(&Cmd::from_args(["SCRIPT", "LOAD", "return 1"])),
            Dest::AllMasters
        );
    }

    #[test]
    fn tracker_completes_in_order() {
        let applied = Arc::new(Applied::new(&[Lsn(0)]));
        let t = Tracker::new(applied.clone(), 1);
        let f = FlowId(0);
        let a = t.register(f, 2, Some(Lsn(10)));
        let b = t.register(f, 1, Some(Lsn(20)));
        t.complete(f, b);
        assert_eq!(applied.get(f), Lsn(0), "b done but a is not");
        t.complete(f, a);
        assert_eq!(applied.get(f), Lsn(0));
        t.complete(f, a);
        assert_eq!(applied.get(f), Lsn(20));
        assert_eq!(t.pending(f), 0);
        t.register(f, 0, Some(Lsn(25)));
        assert_eq!(applied.get(f), Lsn(25));
        let c = t.register(f, 1, None);
        t.register(f, 0, Some(Lsn(30)));
        assert_eq!(applied.get(f), Lsn(25));
        t.complete(f, c);
        assert_eq!(applied.get(f), Lsn(30));
    }
}
