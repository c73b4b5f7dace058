//! The Redis Cluster parts of a replication session: discovery at the start, one writer thread
//! per master node (× `connections_per_node`), the shared slot map flows route by, the
//! topology refresh (on a writer's `MOVED`/`READONLY` hint and every few seconds) that adds
//! writers for new masters without a restart, and the per-flow low-water positions.
//!
//! How order and exactly-once hold (docs/cluster.md, docs/exactly-once.md):
//! * a flow splits each batch per node and, inside a node part, groups commands per slot
//!   (a stable sort: the per-slot order of the flow is kept); one flow always uses the same
//!   connection of a node, so the parts of one (flow, slot) are applied in order;
//! * a writer resolves redirects of what it holds itself, in reply order (`target::writer`);
//! * when the slot map changes, a flow first waits until every batch it sent is acknowledged
//!   (the *fence*), then routes by the new map: nothing it sends later can overtake what an old
//!   owner still holds;
//! * journal groups commit a per-(flow, slot) marker in their `MULTI`: a high-water position
//!   when every earlier group of the (flow, slot) is acknowledged, else the group's own
//!   applied range (a node may refuse an earlier group after running this one, during a slot
//!   migration: [`FlowRouting::marker`]); the coordinator writes the per-flow low-water
//!   position (everything before it acknowledged on every node) to `<prefix>lowwater`; a
//!   resume asks the master for the low-water LSNs and skips what the slot markers show as
//!   applied;
//! * a cross-slot transfer commits its `RESTORE` and then its `DEL` each with its slot marker,
//!   so a resume skips a finished one and completes (`DEL` only) one a crash cut in between
//!   ([`transfer_on_resume`]; re-running it whole would leave a `RENAMENX`/`MOVE` source behind).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use parking_lot::RwLock;

use crate::config::{Config, FlushPolicy};
use crate::model::{Cmd, DbIndex, FlowId, Lsn};
use crate::net::{Conn, Endpoint};
use crate::resp::Value;
use crate::route::split::{self, Routed, Transfer, TransferIo, TransferOutcome};
use crate::route::Slot;
use crate::target::cluster::{
    self as tc, ClusterMarkers, Dest, SlotApplied, SlotOwners, Ticket, TopologyHint, Tracker,
};
use crate::target::topology::{Topology, SLOT_COUNT};
use crate::target::writer::{Applied, Batch, BatchKind, Group, Markers, Writer, WriterConfig};

use super::{pick_core, pin, Event, SessionError};

/// A node's writer connections and their threads.
type NodeWriters = (Vec<Sender<Batch>>, Vec<JoinHandle<()>>);

/// One node part of a flow batch: the writer connection, the commands, the slot groups.
pub(super) type Part = (Sender<Batch>, Vec<(DbIndex, Cmd)>, Vec<Group>);

/// What the session start learned about the cluster.
pub(super) struct Setup {
    /// Seed endpoint (credentials, TLS, timeouts) to derive node endpoints from.
    pub seed: Endpoint,
    /// Every configured seed.
    pub seeds: Vec<Endpoint>,
    /// Masters and slots at the start.
    pub owners: SlotOwners,
    /// Marker names.
    pub markers: ClusterMarkers,
}

impl Setup {
    /// Discovers the cluster from the first seed that answers.
    pub fn discover(cfg: &Config, replid: &str) -> Result<Setup, SessionError> {
        if cfg.checkpoint.marker_prefix.contains('{') {
            return Err(SessionError::fatal(format!(
                "checkpoint.marker_prefix `{}` contains `{{`: on a cluster target the marker keys \
                 carry their own hashtag",
                cfg.checkpoint.marker_prefix
            )));
        }
        let seeds = cfg.target.endpoints();
        let seed = seeds
            .first()
            .cloned()
            .ok_or_else(|| SessionError::fatal("no target address"))?;
        let topo = tc::discover_any(&seeds).map_err(|e| SessionError {
            established: false,
            ..SessionError::retry(format!("target: {e}"))
        })?;
        if !topo.cluster {
            return Err(SessionError::fatal(format!(
                "target.type is redis-cluster but {} has cluster support disabled",
                seed.addr
            )));
        }
        log::info!(
            "target cluster: {} masters ({}), {} of 16384 slots covered",
            topo.masters.len(),
            topo.masters
                .iter()
                .map(|m| format!("{} {} slots", m.addr, m.slot_count()))
                .collect::<Vec<_>>()
                .join(", "),
            topo.covered_slots()
        );
        Ok(Setup {
            seed,
            seeds,
            owners: SlotOwners::from_topology(&topo, None),
            markers: ClusterMarkers {
                prefix: cfg.checkpoint.marker_prefix.clone(),
                replid: replid.to_string(),
            },
        })
    }

    /// An endpoint for node `addr`.
    pub fn node(&self, addr: &str) -> Endpoint {
        self.seed.with_addr(addr)
    }

    /// Endpoint of the first master (for probing the target's capabilities).
    pub fn first_master(&self) -> Endpoint {
        let addr = self
            .owners
            .masters()
            .first()
            .and_then(|&i| self.owners.nodes.get(i).cloned())
            .unwrap_or_else(|| self.seed.addr.clone());
        self.node(&addr)
    }

    /// Each flow's low-water position of this master, from `<prefix>lowwater`.
    pub fn read_lowwater(&self, flows: u32) -> Result<Vec<Option<Lsn>>, String> {
        let key = self.markers.lowwater_key();
        let mut c = Cmd::new("HGETALL");
        c.arg(&key);
        let slot = Slot::of_key(&key).get();
        let v = tc::request_slot(&self.seed, &self.owners, slot, &c).map_err(|e| e.to_string())?;
        if let Some(e) = v.server_error() {
            return Err(format!("HGETALL {}: {e}", String::from_utf8_lossy(&key)));
        }
        Ok(self.markers.parse_lowwater(&v, flows))
    }

    /// Per flow, the slot markers (skip table of a resume).
    pub fn read_skip(&self, flows: u32) -> Result<Vec<HashMap<u16, SlotApplied>>, String> {
        tc::read_slot_markers(&self.seed, &self.owners, &self.markers, flows)
            .map_err(|e| e.to_string())
    }

    /// `FLUSHALL` on every master.
    pub fn flush_all(&self) -> Result<(), String> {
        tc::on_every_master(&self.seed, &self.owners, &Cmd::new("FLUSHALL"))
            .map_err(|e| e.to_string())
    }

    /// Closes writer connections of an earlier session or process on every master
    /// ([`Markers::retire_writers`]: their unread input must not run after the markers are
    /// read).
    pub fn retire_writers(&self, markers: &Markers) -> Result<usize, String> {
        let mut n = 0;
        for i in self.owners.masters() {
            let Some(addr) = self.owners.nodes.get(i) else {
                continue;
            };
            let mut c = Conn::connect(&self.node(addr)).map_err(|e| e.to_string())?;
            n += markers.retire_writers(&mut c).map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    /// Readies the cluster for a full sync, as `prepare_full_sync` does for one server: flush
    /// every master when the policy asks for it (`auto`: when our owner marker or low-water
    /// hash is there), delete every marker, set the owner marker.
    pub fn prepare_full_sync(&self, policy: FlushPolicy) -> Result<(), String> {
        let owner = Markers {
            prefix: self.markers.prefix.clone(),
            replid: self.markers.replid.clone(),
        };
        let mut ours = false;
        for key in [owner.owner_key(), self.markers.lowwater_key()] {
            let mut c = Cmd::new("EXISTS");
            c.arg(&key);
            let v = tc::request_slot(&self.seed, &self.owners, Slot::of_key(&key).get(), &c)
                .map_err(|e| format!("reading the markers: {e}"))?;
            ours |= v.as_int().is_some_and(|n| n > 0);
        }
        if super::flush_decision(policy, ours, "every master of the target") {
            self.flush_all().map_err(|e| format!("FLUSHALL: {e}"))?;
        }
        self.clear_markers()
            .map_err(|e| format!("clearing the markers: {e}"))?;
        let key = owner.owner_key();
        let v = tc::request_slot(
            &self.seed,
            &self.owners,
            Slot::of_key(&key).get(),
            &owner.owner_cmd(),
        )
        .map_err(|e| format!("setting the owner marker: {e}"))?;
        match v.server_error() {
            Some(e) => Err(format!("setting the owner marker: {e}")),
            None => Ok(()),
        }
    }

    /// Deletes every marker key on every master.
    pub fn clear_markers(&self) -> Result<usize, String> {
        tc::clear_markers(&self.seed, &self.owners, &self.markers).map_err(|e| e.to_string())
    }
}

/// The slot map and the writers' senders, by node index.
pub(super) struct Routes {
    pub owners: SlotOwners,
    /// Per node index: its writer connections (empty: no writer).
    pub txs: Vec<Vec<Sender<Batch>>>,
}

/// State shared by the flows, the writers and the coordinator of a cluster session.
pub(super) struct ClusterCtx {
    pub setup: Setup,
    pub tracker: Arc<Tracker>,
    pub hint: Arc<TopologyHint>,
    pub routes: RwLock<Routes>,
    /// Bumped at every published slot-map change.
    pub version: AtomicU64,
    /// Flows (the tracker has one more lane, for global commands).
    pub flows: u32,
}

impl ClusterCtx {
    /// The lane of global commands in the tracker.
    pub fn global_lane(&self) -> FlowId {
        FlowId(self.flows)
    }
}

/// Spawns writer threads.
pub(super) struct Spawner {
    pub cfg: Config,
    pub applied: Arc<Applied>,
    pub abort: Arc<AtomicBool>,
    pub ev: Sender<Event>,
    pub hint: Arc<TopologyHint>,
    pub markers: Markers,
    /// Writer threads spawned so far (for CPU pinning round-robin).
    pub spawned: usize,
    /// The status model: per-node writer counters.
    pub ops: Arc<crate::ops::Stats>,
}

impl Spawner {
    /// Connects and starts `connections_per_node` writers for node `addr`.
    pub fn node(&mut self, ep: &Endpoint) -> Result<NodeWriters, SessionError> {
        let conns = self.cfg.pipeline.connections_per_node.max(1);
        let mut txs = Vec::new();
        let mut handles = Vec::new();
        for w in 0..conns {
            let (tx, rx) = bounded::<Batch>(self.cfg.pipeline.channel_capacity.max(1));
            let wcfg = WriterConfig {
                endpoint: ep.clone(),
                window: self.cfg.pipeline.inflight_batches.max(1),
                markers: self.markers.clone(),
                reply_timeout: self.cfg.target.io_timeout,
                hint: Some(self.hint.clone()),
            };
            let writer = Writer::connect(wcfg, self.applied.clone()).map_err(|e| SessionError {
                retryable: e.retryable,
                ..SessionError::retry(e.to_string())
            })?;
            let name = if conns == 1 {
                format!("writer-{}", ep.addr)
            } else {
                format!("writer-{}#{w}", ep.addr)
            };
            let wstats = self.ops.writer(name.trim_start_matches("writer-"));
            wstats.capacity.store(
                self.cfg.pipeline.channel_capacity.max(1) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let writer = writer.with_stats(wstats);
            let ev = self.ev.clone();
            let abort = self.abort.clone();
            let core = pick_core(&self.cfg.cpu.writer_threads, self.spawned);
            self.spawned += 1;
            let tname = name.clone();
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    pin(core, &tname);
                    let r = writer.run(&rx, &abort);
                    let _ = ev.send(Event::WriterEnded(tname, r.err()));
                })
                .map_err(|e| SessionError::fatal(format!("spawning {name}: {e}")))?;
            txs.push(tx);
            handles.push(h);
        }
        Ok((txs, handles))
    }

    /// Writers for every master of `owners`, into a fresh `Routes`.
    pub fn all(
        &mut self,
        setup: &Setup,
    ) -> Result<(Routes, Vec<JoinHandle<()>>, usize), SessionError> {
        let owners = setup.owners.clone();
        let mut txs = vec![Vec::new(); owners.nodes.len()];
        let mut handles = Vec::new();
        let mut count = 0;
        for i in owners.masters() {
            let Some(addr) = owners.nodes.get(i) else {
                continue;
            };
            let (t, h) = self.node(&setup.node(addr))?;
            count += t.len();
            txs[i] = t;
            handles.extend(h);
        }
        Ok((Routes { owners, txs }, handles, count))
    }
}

/// One routed piece of an entry, in order.
pub(super) enum Step {
    /// A single-slot (or keyless) command for the pending batch.
    Cmd(Cmd),
    /// A cross-slot `RENAME`/`RENAMENX`/`COPY`, run in place.
    Transfer {
        /// What to move or copy.
        t: Transfer,
        /// The original command (for messages).
        cmd: Cmd,
        /// The position its steps commit as slot markers (`Transfer::run`): the entry's end
        /// when the transfer is the entry's last write; `None` (plain writes, no marker) in
        /// the snapshot phase and when more pieces of the same entry follow it (a pre-v1.21
        /// atomic group), whose skipping the marker would otherwise decide.
        mark: Option<Lsn>,
        /// Resume: its destination step was committed and its source step was not (the
        /// destination slot's marker is at the entry, the source slot's is not): only
        /// complete it (`Transfer::finish`).
        finish: bool,
    },
    /// A command refused on a cluster, with its rule (`docs/cluster-commands.md`).
    Refused(Cmd, &'static str),
}

/// A flow's view of the routes and its resume skip table.
pub(super) struct FlowRouting {
    ctx: Arc<ClusterCtx>,
    version: u64,
    owners: SlotOwners,
    txs: Vec<Vec<Sender<Batch>>>,
    /// Resume: per slot, what the flow's slot marker says is applied; a journal command
    /// whose entry it covers was applied already.
    skip: HashMap<u16, SlotApplied>,
    /// The largest position in `skip` (past it, nothing is skipped and the table is dropped).
    skip_until: Lsn,
    /// The loss of atomicity of a cross-slot transaction was logged.
    atomic_logged: bool,
    /// Per slot: the end of the flow's last journal group sent to it in this session (0:
    /// none). When it is past the flow's applied position, that group may still be refused
    /// after a later one ran ([`FlowRouting::marker`]).
    last_end: Vec<Lsn>,
    /// Per slot: the end of each applied range the flow's slot marker holds (by range index;
    /// the ranges of an earlier session as read at the resume, then the ones this session
    /// wrote). A range whose end the flow's applied position passed may be reused.
    ranges: HashMap<u16, Vec<Lsn>>,
    /// Per slot: the journal groups sent and not known acknowledged that touch two or more
    /// distinct keys: their end and their keys' hashes
    /// ([`FlowRouting::touches_several_key_group`]).
    several_keys: HashMap<u16, Vec<(Lsn, Vec<u64>)>>,
    /// Commands skipped because their slot marker showed them applied.
    pub skipped: u64,
    /// Cross-slot transfers run.
    pub transfers: u64,
}

impl FlowRouting {
    pub fn new(ctx: Arc<ClusterCtx>, skip: HashMap<u16, SlotApplied>) -> FlowRouting {
        let (version, owners, txs) = {
            let r = ctx.routes.read();
            (
                ctx.version.load(Ordering::SeqCst),
                r.owners.clone(),
                r.txs.clone(),
            )
        };
        let skip_until = skip.values().map(SlotApplied::max).max().unwrap_or(Lsn(0));
        let ranges = skip
            .iter()
            .filter(|(_, a)| !a.ranges.is_empty())
            .map(|(&s, a)| {
                // A half-written or unreadable range number is reusable at once (writing it
                // adds both members).
                let ends = a.ranges.iter().map(|r| r.map_or(Lsn(0), |(_, e)| e));
                (s, ends.collect())
            })
            .collect();
        FlowRouting {
            ctx,
            version,
            owners,
            txs,
            skip,
            skip_until,
            last_end: vec![Lsn(0); usize::from(SLOT_COUNT)],
            ranges,
            several_keys: HashMap::new(),
            atomic_logged: false,
            skipped: 0,
            transfers: 0,
        }
    }

    /// True when the coordinator published another slot map.
    pub fn outdated(&self) -> bool {
        self.ctx.version.load(Ordering::SeqCst) != self.version
    }

    /// Batches of `flow` not acknowledged by every node yet.
    pub fn in_flight(&self, flow: FlowId) -> usize {
        self.ctx.tracker.pending(flow)
    }

    /// Takes the current slot map (call only when nothing is in flight: the fence).
    pub fn reload(&mut self) {
        let r = self.ctx.routes.read();
        self.version = self.ctx.version.load(Ordering::SeqCst);
        self.owners = r.owners.clone();
        self.txs = r.txs.clone();
    }

    /// Routes the commands of one entry (journal entries carry `end`, their flow's `next`
    /// after them) with `route::split`: single-slot commands in order, minus those a resume
    /// finds applied already; cross-slot transfers (`RENAME`/`COPY`) to run in place; refused
    /// commands with their rule.
    pub fn route(
        &mut self,
        flow: FlowId,
        cmds: Vec<Cmd>,
        end: Option<Lsn>,
        atomic: bool,
    ) -> Vec<Step> {
        let mut out = Vec::with_capacity(cmds.len());
        let mut slots: Vec<u16> = Vec::new();
        for c in cmds {
            let pieces: Vec<(Option<u16>, Cmd)> = match split::split(&c) {
                Routed::Single(s) => vec![(Some(s.get()), c)],
                Routed::Keyless => vec![(None, c)],
                Routed::Split(parts) => {
                    parts.into_iter().map(|(s, p)| (Some(s.get()), p)).collect()
                }
                Routed::Transfer(t) => {
                    match transfer_on_resume(&self.skip, &t, end) {
                        None => self.skipped += 1,
                        Some(finish) => out.push(Step::Transfer {
                            t,
                            cmd: c,
                            mark: None,
                            finish,
                        }),
                    }
                    continue;
                }
                Routed::Refused { rule } => {
                    out.push(Step::Refused(c, rule));
                    continue;
                }
            };
            for (s, pc) in pieces {
                if let Some(s) = s {
                    if atomic && !slots.contains(&s) {
                        slots.push(s);
                    }
                    if end.is_some_and(|e| self.applied_before(s, e)) {
                        self.skipped += 1;
                        continue;
                    }
                }
                out.push(Step::Cmd(pc));
            }
        }
        mark_last_transfer(&mut out, end);
        if let Some(e) = end {
            if !self.skip.is_empty() && e > self.skip_until {
                log::info!(
                    "{flow}: replay passed every slot marker (lsn {}): {} command(s) skipped as \
                     already applied",
                    self.skip_until.0,
                    self.skipped
                );
                self.skip.clear();
            }
        }
        if atomic && slots.len() > 1 && !self.atomic_logged {
            self.atomic_logged = true;
            log::warn!(
                "{flow}: a transaction spans {} slots: on a cluster it is applied per slot, each \
                 part atomically but not together (logged once per flow)",
                slots.len()
            );
        }
        out
    }

    /// True when the resume skip table shows the entry ending at `end` applied in `slot`.
    fn applied_before(&self, slot: u16, end: Lsn) -> bool {
        self.skip.get(&slot).is_some_and(|m| m.covers(end))
    }

    /// The slot-marker command of the flow's journal group for `slot` whose entries end at or
    /// before `end`, given the flow's applied position `applied` (every batch before it was
    /// acknowledged by every node).
    ///
    /// * Every earlier group of the (flow, slot) is acknowledged (its end is at or before
    ///   `applied`): the group raises the high-water position to `end` (`ZADD GT`), as it is
    ///   the only one of the slot not known applied.
    /// * An earlier group is still unacknowledged: it may yet be refused *after* this one ran
    ///   (during a slot migration the node refuses a group whose key already moved, `ASK`,
    ///   and runs the next one whose keys are still there; the writer resends the refused
    ///   one later). A high-water at `end` would then cover the refused group's entries, and a
    ///   resume after a crash in that window would skip them (issue 6). So the group records
    ///   its own range `(last end of the slot, end]` and raises the high-water only to
    ///   `applied`, which every node acknowledged. A range number is reused once `applied`
    ///   passed the end it holds: the same `ZADD GT` raises the high-water past it, so the
    ///   entries it covered stay covered.
    fn marker(&mut self, flow: FlowId, slot: u16, end: Lsn, applied: Lsn) -> Cmd {
        let markers = &self.ctx.setup.markers;
        let Some(last) = self.last_end.get_mut(usize::from(slot)) else {
            return markers.zadd(slot, flow, end);
        };
        let start = std::mem::replace(last, end);
        if start <= applied {
            return markers.zadd(slot, flow, end);
        }
        let ends = self.ranges.entry(slot).or_default();
        let i = match ends.iter().position(|e| *e <= applied) {
            Some(i) => i,
            None => {
                ends.push(Lsn(0));
                ends.len() - 1
            }
        };
        if let Some(e) = ends.get_mut(i) {
            *e = end;
        }
        markers.zadd_range(slot, flow, applied, i as u32, (start, end))
    }

    /// True when `cmd` (of `slot`) touches a key of a journal group of the slot that touches
    /// two or more distinct keys and was not acknowledged yet: the flow must then wait until
    /// everything it sent is acknowledged before it sends `cmd` ([`FlowRouting::split`]).
    ///
    /// Why: during a slot migration a node refuses a group one of whose keys already moved
    /// (`ASK`; `TRYAGAIN` for a mix) and runs a later group of the same slot whose keys are
    /// all still there; the writer resends the refused group after. When the refused group
    /// also wrote a key that stayed, and the later group writes (or reads) that key too, the
    /// two writes of that key would land in the wrong order (a test saw the `MSET k1 … k2
    /// first` of a refused group land after a later `SET k2 second`). A group of one key
    /// cannot be overtaken that way: a later group of the same key finds it moved too, and is
    /// refused as well.
    fn touches_several_key_group(&self, slot: u16, cmd: &Cmd) -> bool {
        let Some(groups) = self.several_keys.get(&slot) else {
            return false;
        };
        split::keys(cmd).into_iter().any(|k| {
            let h = key_hash(k);
            groups.iter().any(|(_, ks)| ks.contains(&h))
        })
    }

    /// Remembers a journal group of `slot` ending at `end` when its commands touch two or more
    /// distinct keys ([`FlowRouting::touches_several_key_group`]).
    fn note_keys(&mut self, slot: u16, end: Lsn, cmds: &[(DbIndex, Cmd)]) {
        if let [(_, c)] = cmds {
            // The common group: one command, usually of one key.
            if split::keys(c).len() < 2 {
                return;
            }
        }
        let mut ks: Vec<u64> = cmds
            .iter()
            .flat_map(|(_, c)| split::keys(c))
            .map(key_hash)
            .collect();
        ks.sort_unstable();
        ks.dedup();
        if ks.len() >= 2 {
            self.several_keys.entry(slot).or_default().push((end, ks));
        }
    }

    /// Runs a cross-slot transfer now, on the owners of its slots (the caller drained the
    /// flow first: every earlier write is applied). With `mark`, each committed step is one
    /// `MULTI … ZADD <slot marker> GT <mark> … EXEC` in its slot; `finish` only completes one
    /// whose destination step a previous session committed.
    pub fn transfer(
        &self,
        flow: FlowId,
        t: &Transfer,
        mark: Option<Lsn>,
        finish: bool,
    ) -> Result<TransferOutcome, String> {
        let mut io = SlotIo {
            routing: self,
            flow,
            mark,
        };
        if finish {
            t.finish(&mut io)
        } else {
            t.run(&mut io)
        }
    }

    /// Splits a flow batch into node parts grouped per slot. Journal batches (`next` given)
    /// commit the slot marker of each group in the group's transaction. The flag: the flow
    /// must wait until everything it sent is acknowledged before it sends (and registers)
    /// these parts ([`FlowRouting::touches_several_key_group`]: per-key order through a slot
    /// migration).
    pub fn split(
        &mut self,
        flow: FlowId,
        cmds: Vec<(DbIndex, Cmd)>,
        next: Option<Lsn>,
    ) -> (Vec<Part>, bool) {
        let applied = self.ctx.tracker.applied(flow);
        if !self.several_keys.is_empty() {
            self.several_keys.retain(|_, v| {
                v.retain(|(end, _)| *end > applied);
                !v.is_empty()
            });
        }
        let mut wait = false;
        // Per node index: (sort key, original position, command).
        let masters = self.owners.masters();
        let fallback = masters.first().copied().unwrap_or(0);
        let mut per: Vec<Vec<(u32, Cmd)>> = vec![Vec::new(); self.owners.nodes.len().max(1)];
        for (_, c) in cmds {
            match tc::dest(&c) {
                Dest::Slot(s) => {
                    wait = wait || (next.is_some() && self.touches_several_key_group(s, &c));
                    let i = self.owners.owner_of(s).unwrap_or(fallback);
                    if let Some(p) = per.get_mut(i) {
                        p.push((u32::from(s), c));
                    }
                }
                Dest::AllMasters => {
                    for &i in &masters {
                        if let Some(p) = per.get_mut(i) {
                            p.push((u32::from(SLOT_COUNT), c.clone()));
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (i, mut part) in per.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            // Stable: the flow's order inside each slot is kept.
            part.sort_by_key(|(k, _)| *k);
            let mut groups: Vec<Group> = Vec::new();
            let mut out_cmds = Vec::with_capacity(part.len());
            for (j, (k, c)) in part.into_iter().enumerate() {
                let slot = u16::try_from(k).ok().filter(|s| *s < SLOT_COUNT);
                match groups.last_mut() {
                    Some(g) if u32::from(g.slot) == k || (slot.is_none() && g.marker.is_none()) => {
                        g.end = j + 1
                    }
                    _ => groups.push(Group {
                        slot: slot.unwrap_or(0),
                        end: j + 1,
                        marker: match (slot, next) {
                            (Some(s), Some(n)) => Some(self.marker(flow, s, n, applied)),
                            _ => None,
                        },
                    }),
                }
                out_cmds.push((DbIndex(0), c));
            }
            if let Some(end) = next {
                let mut start = 0;
                for g in &groups {
                    let range = out_cmds.get(start..g.end).unwrap_or_default();
                    if g.marker.is_some() {
                        self.note_keys(g.slot, end, range);
                    }
                    start = g.end;
                }
            }
            let tx = self
                .txs
                .get(i)
                .filter(|t| !t.is_empty())
                .or_else(|| self.txs.iter().find(|t| !t.is_empty()));
            let Some(conns) = tx else { continue };
            let Some(tx) = conns.get(flow.0 as usize % conns.len()) else {
                continue;
            };
            out.push((tx.clone(), out_cmds, groups));
        }
        (out, wait)
    }

    /// A ticket for a batch of `parts` parts.
    pub fn ticket(&self, flow: FlowId, parts: usize, next: Option<Lsn>) -> Ticket {
        let seq = self.ctx.tracker.register(flow, parts, next);
        Ticket {
            tracker: self.ctx.tracker.clone(),
            lane: flow,
            seq,
        }
    }
}

/// A key's hash for [`FlowRouting::touches_several_key_group`] (a collision only makes a flow
/// wait once more).
fn key_hash(key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// What a resume does with a transfer of the entry ending at `end`, from the flow's slot
/// markers `skip`: `None` = skip it (complete), `Some(true)` = only finish it
/// (`Transfer::finish`), `Some(false)` = run it whole.
///
/// A transfer runs with nothing of its flow in flight and commits its destination step, then
/// its source step, each with the slot marker at the entry (`Transfer::run`); later entries
/// are sent only once it returned. So the source slot's marker at or past the entry means it
/// is complete; the destination's alone means its RESTORE ran and its DEL did not.
fn transfer_on_resume(
    skip: &HashMap<u16, SlotApplied>,
    t: &Transfer,
    end: Option<Lsn>,
) -> Option<bool> {
    let Some(e) = end else {
        return Some(false);
    };
    let applied = |key: &[u8]| {
        skip.get(&Slot::of_key(key).get())
            .is_some_and(|m| m.covers(e))
    };
    if applied(&t.src) {
        None
    } else {
        Some(applied(&t.dst))
    }
}

/// Gives the entry's last write, when it is a transfer, the entry's position `end` to commit
/// in its slots. An earlier transfer of the same entry (a pre-v1.21 atomic group) gets none:
/// a marker at the entry would make the pieces after it look applied on a resume.
fn mark_last_transfer(steps: &mut [Step], end: Option<Lsn>) {
    if let Some(Step::Transfer { mark, .. }) = steps
        .iter_mut()
        .rev()
        .find(|s| !matches!(s, Step::Refused(..)))
    {
        *mark = end;
    }
}

/// A transfer's way to the cluster: blocking requests to the slot owners by the flow's map
/// (redirects followed), committed steps with the flow's slot marker.
struct SlotIo<'a> {
    routing: &'a FlowRouting,
    flow: FlowId,
    mark: Option<Lsn>,
}

impl TransferIo for SlotIo<'_> {
    fn read(&mut self, slot: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String> {
        let seed = &self.routing.ctx.setup.seed;
        cmds.iter()
            .map(|c| {
                tc::request_slot(seed, &self.routing.owners, slot.get(), c)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    fn commit(&mut self, slot: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String> {
        let Some(mark) = self.mark else {
            return self.read(slot, cmds);
        };
        let ctx = &self.routing.ctx;
        let mut tx = cmds.to_vec();
        tx.push(ctx.setup.markers.zadd(slot.get(), self.flow, mark));
        let v = tc::request_slot_atomic(&ctx.setup.seed, &self.routing.owners, slot.get(), &tx)
            .map_err(|e| e.to_string())?;
        match v {
            Value::Array(mut items) if items.len() == tx.len() => {
                if let Some(e) = items.pop().filter(Value::is_error) {
                    return Err(format!("the marker of {slot}: {e:?}"));
                }
                Ok(items)
            }
            other => Err(format!("{cmds:?} with the marker of {slot}: {other:?}")),
        }
    }
}

/// The coordinator's side of a cluster session.
pub(super) struct CoordCluster {
    pub ctx: Arc<ClusterCtx>,
    pub spawner: Spawner,
    /// Writers spawned after the start (joined at the end).
    pub late: Vec<JoinHandle<()>>,
    pub last_refresh: Instant,
    pub last_lowwater: Instant,
    /// The last low-water positions written.
    pub written: Vec<Lsn>,
}

/// How often the slot map is re-read without a hint.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How often the low-water positions are written.
const LOWWATER_EVERY: Duration = Duration::from_millis(500);

impl CoordCluster {
    /// Re-reads the topology when a writer hinted or every few seconds; publishes a changed
    /// slot map (with writers for new masters). Returns how many writer threads it started.
    pub fn maybe_refresh(&mut self) -> Result<usize, SessionError> {
        let hinted = self.ctx.hint.take();
        if !hinted && self.last_refresh.elapsed() < REFRESH_EVERY {
            return Ok(0);
        }
        self.last_refresh = Instant::now();
        // Seeds first, then every node we know (a seed may be the node that failed).
        let mut eps = self.ctx.setup.seeds.clone();
        {
            let r = self.ctx.routes.read();
            eps.extend(r.owners.nodes.iter().map(|a| self.ctx.setup.node(a)));
        }
        let topo: Topology = match tc::discover_any(&eps) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("target topology refresh failed: {e}");
                if hinted {
                    self.ctx.hint.mark();
                }
                return Ok(0);
            }
        };
        if topo.covered_slots() < usize::from(SLOT_COUNT) {
            // A failover or migration in progress: keep routing by the old map (redirects
            // still lead the writers) and look again soon.
            log::debug!(
                "target topology covers {} slots: not switching yet",
                topo.covered_slots()
            );
            self.ctx.hint.mark();
            std::thread::sleep(Duration::from_millis(50));
            return Ok(0);
        }
        let prev = self.ctx.routes.read().owners.clone();
        let owners = SlotOwners::from_topology(&topo, Some(&prev));
        if owners == prev {
            return Ok(0);
        }
        let mut txs = self.ctx.routes.read().txs.clone();
        txs.resize(owners.nodes.len(), Vec::new());
        let mut started = 0;
        for i in owners.masters() {
            if txs.get(i).is_some_and(|t| !t.is_empty()) {
                continue;
            }
            let Some(addr) = owners.nodes.get(i) else {
                continue;
            };
            let ep = self.ctx.setup.node(addr);
            let (t, h) = self.spawner.node(&ep)?;
            started += t.len();
            log::info!("target: new master {addr}: {} writer(s) started", t.len());
            txs[i] = t;
            self.late.extend(h);
        }
        let moved = owners
            .owner
            .iter()
            .zip(prev.owner.iter())
            .filter(|(a, b)| a != b)
            .count();
        log::info!(
            "target topology changed: {moved} slot(s) have a new owner; masters now: {}",
            owners
                .masters()
                .iter()
                .filter_map(|&i| owners.nodes.get(i).cloned())
                .collect::<Vec<_>>()
                .join(", ")
        );
        {
            let mut r = self.ctx.routes.write();
            r.owners = owners;
            r.txs = txs;
        }
        self.ctx.version.fetch_add(1, Ordering::SeqCst);
        Ok(started)
    }

    /// Writes the flows' low-water positions (`Some` only once every flow is in stable sync)
    /// when due or `force`d.
    pub fn maybe_lowwater(
        &mut self,
        positions: Option<Vec<Lsn>>,
        force: bool,
    ) -> Result<(), String> {
        let Some(pos) = positions else { return Ok(()) };
        if !force && (self.last_lowwater.elapsed() < LOWWATER_EVERY || pos == self.written) {
            return Ok(());
        }
        self.last_lowwater = Instant::now();
        let list: Vec<(FlowId, Lsn)> = pos
            .iter()
            .enumerate()
            .map(|(i, l)| (FlowId(i as u32), *l))
            .collect();
        let cmd = self.ctx.setup.markers.lowwater_cmd(&list);
        let key = self.ctx.setup.markers.lowwater_key();
        let owners = self.ctx.routes.read().owners.clone();
        let v = tc::request_slot(
            &self.ctx.setup.seed,
            &owners,
            Slot::of_key(&key).get(),
            &cmd,
        )
        .map_err(|e| format!("writing the low-water positions: {e}"))?;
        if let Some(e) = v.server_error() {
            if e.is_transient() {
                // The slot map moved under us (a failover still settling, a migration): the
                // low-water position only shortens a resume's replay, so it waits for the
                // next round, after a refresh of the slot map; the session goes on.
                log::debug!("low-water positions not written this round ({e}): retried later");
                self.ctx.hint.mark();
                return Ok(());
            }
            return Err(format!("writing the low-water positions: {e}"));
        }
        self.written = pos;
        Ok(())
    }

    /// Sends a global command (FLUSHALL/FLUSHDB) to every master; completion is tracked on
    /// the global lane.
    pub fn send_global(&self, cmd: &Cmd, limit: Duration) -> Result<(), SessionError> {
        let r = self.ctx.routes.read();
        let masters = r.owners.masters();
        let targets: Vec<Sender<Batch>> = masters
            .iter()
            .filter_map(|&i| r.txs.get(i).and_then(|t| t.first()).cloned())
            .collect();
        drop(r);
        let lane = self.ctx.global_lane();
        let seq = self.ctx.tracker.register(lane, targets.len(), None);
        for tx in targets {
            let batch = Batch {
                flow: lane,
                cmds: vec![(DbIndex(0), cmd.clone())],
                kind: BatchKind::Tracked {
                    groups: vec![Group {
                        slot: 0,
                        end: 1,
                        marker: None,
                    }],
                    ticket: Ticket {
                        tracker: self.ctx.tracker.clone(),
                        lane,
                        seq,
                    },
                },
            };
            match tx.send_timeout(batch, limit) {
                Ok(()) => {}
                // A writer that ended reports why itself (its event is queued before its
                // channel closes); the barrier then never completes and the session ends.
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {}
                Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                    return Err(SessionError::retry(super::stalled(
                        "the FLUSH barrier",
                        limit,
                    )))
                }
            }
        }
        Ok(())
    }

    /// True once every master acknowledged the global command.
    pub fn global_done(&self) -> bool {
        self.ctx.tracker.pending(self.ctx.global_lane()) == 0
    }

    /// Drops the coordinator's senders: once the flows are gone too, the writers drain and end.
    pub fn close(&self) {
        let mut r = self.ctx.routes.write();
        r.txs.clear();
    }

    /// Joins the writers started after the session start.
    pub fn join_late(&mut self) -> bool {
        let mut ok = true;
        for h in self.late.drain(..) {
            ok &= h.join().is_ok();
        }
        ok
    }
}

/// The probe connection of a cluster session (to the first master).
pub(super) fn probe(setup: &Setup) -> Result<Conn, SessionError> {
    Conn::connect(&setup.first_master()).map_err(|e| SessionError {
        retryable: !e.is_auth(),
        established: false,
        ..SessionError::retry(format!("target: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(args: &[&str]) -> Transfer {
        Transfer::from_cmd(&Cmd::from_args(args)).unwrap()
    }

    #[test]
    fn transfer_resume_rule_reads_the_two_slot_markers() {
        let t = transfer(&["RENAMENX", "foo", "bar"]);
        let (a, b) = (Slot::of_key(b"foo").get(), Slot::of_key(b"bar").get());
        let end = Some(Lsn(10));
        let skip = |pairs: &[(u16, u64)]| -> HashMap<u16, SlotApplied> {
            pairs
                .iter()
                .map(|&(s, l)| (s, SlotApplied::high(Lsn(l))))
                .collect()
        };
        // Nothing committed at the entry: run whole (markers of earlier entries only).
        assert_eq!(transfer_on_resume(&skip(&[]), &t, end), Some(false));
        assert_eq!(
            transfer_on_resume(&skip(&[(a, 9), (b, 9)]), &t, end),
            Some(false)
        );
        // Destination step committed, source step not: finish only.
        assert_eq!(
            transfer_on_resume(&skip(&[(a, 9), (b, 10)]), &t, end),
            Some(true)
        );
        // Source step committed (or a later entry in its slot): complete.
        assert_eq!(transfer_on_resume(&skip(&[(a, 10)]), &t, end), None);
        assert_eq!(transfer_on_resume(&skip(&[(a, 12), (b, 3)]), &t, end), None);
        // The snapshot phase (no position) never skips.
        assert_eq!(transfer_on_resume(&skip(&[(a, 12)]), &t, None), Some(false));
    }

    /// A flow's routing over an empty slot map (no writers): enough for the marker decisions.
    fn routing(skip: HashMap<u16, SlotApplied>) -> FlowRouting {
        let owners = SlotOwners {
            nodes: Vec::new(),
            owner: vec![tc::NO_OWNER; usize::from(SLOT_COUNT)],
        };
        let applied = Arc::new(Applied::new(&[Lsn(0)]));
        let ctx = ClusterCtx {
            setup: Setup {
                seed: Endpoint::plain("127.0.0.1:1"),
                seeds: Vec::new(),
                owners: owners.clone(),
                markers: ClusterMarkers {
                    prefix: "p:".into(),
                    replid: "r".into(),
                },
            },
            tracker: Arc::new(Tracker::new(applied, 2)),
            hint: Arc::new(TopologyHint::default()),
            routes: RwLock::new(Routes {
                owners,
                txs: Vec::new(),
            }),
            version: AtomicU64::new(0),
            flows: 1,
        };
        FlowRouting::new(Arc::new(ctx), skip)
    }

    /// The marker arguments after `ZADD <key>`: `GT`, then (score, member) pairs.
    fn marker_args(c: &Cmd) -> Vec<String> {
        c.args()
            .skip(2)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn a_group_behind_an_unacknowledged_one_of_its_slot_records_a_range() {
        let f = FlowId(0);
        // A range of an earlier session in slot 5 (number 0, up to 50), read at the resume.
        let mut old = SlotApplied::high(Lsn(8));
        old.set_range(0, Lsn(40), Lsn(50));
        let mut r = routing(HashMap::from([(5, old)]));
        // First group of the slot in this session: nothing of it in flight: high-water.
        assert_eq!(
            marker_args(&r.marker(f, 5, Lsn(20), Lsn(10))),
            ["GT", "20", "r:0"]
        );
        // The group up to 20 is not acknowledged (applied 10): a range (20, 30], number 1
        // (number 0 still holds entries past the acknowledged position), high-water to 10.
        assert_eq!(
            marker_args(&r.marker(f, 5, Lsn(30), Lsn(10))),
            ["GT", "10", "r:0", "20", "r:0:s1", "30", "r:0:e1"]
        );
        // Another slot is independent.
        assert_eq!(
            marker_args(&r.marker(f, 6, Lsn(30), Lsn(10))),
            ["GT", "30", "r:0"]
        );
        // Everything up to 30 acknowledged: high-water again.
        assert_eq!(
            marker_args(&r.marker(f, 5, Lsn(35), Lsn(30))),
            ["GT", "35", "r:0"]
        );
        // Behind an unacknowledged group again: number 1 is reusable (its end 30 is
        // acknowledged; the same ZADD raises the high-water to 30).
        assert_eq!(
            marker_args(&r.marker(f, 5, Lsn(45), Lsn(30))),
            ["GT", "30", "r:0", "35", "r:0:s1", "45", "r:0:e1"]
        );
        // Still behind (45 not acknowledged): number 1 is busy, 0 too (50): a new number 2.
        assert_eq!(
            marker_args(&r.marker(f, 5, Lsn(55), Lsn(33))),
            ["GT", "33", "r:0", "45", "r:0:s2", "55", "r:0:e2"]
        );
        // Acknowledged up to 50: the earlier session's number 0 is free first.
        assert_eq!(
            marker_args(&r.marker(f, 5, Lsn(60), Lsn(50))),
            ["GT", "50", "r:0", "55", "r:0:s0", "60", "r:0:e0"]
        );
    }

    #[test]
    fn a_later_write_of_a_key_waits_for_an_unacknowledged_group_of_several_keys() {
        let f = FlowId(0);
        let mut r = routing(HashMap::new());
        // Splits a batch that writes nothing new to remember (a position already passed).
        let must_wait = |r: &mut FlowRouting, f: FlowId, cmds: &[(DbIndex, Cmd)]| {
            let mut probe = r.several_keys.clone();
            let (_, wait) = r.split(f, cmds.to_vec(), Some(Lsn(1)));
            std::mem::swap(&mut r.several_keys, &mut probe);
            // The probe noted its own groups (position 1): dropped again.
            wait
        };
        let cmds = |list: &[&[&str]]| -> Vec<(DbIndex, Cmd)> {
            list.iter()
                .map(|a| (DbIndex(0), Cmd::from_args(a.iter().copied())))
                .collect()
        };
        // Groups of one key never make anything wait.
        let _ = r.split(f, cmds(&[&["SET", "{t}a", "1"]]), Some(Lsn(10)));
        assert!(!must_wait(&mut r, f, &cmds(&[&["SET", "{t}a", "2"]])));
        // One command of two keys of the slot, not acknowledged: a later write (or read) of
        // either key waits; other keys of the slot, and other slots, do not.
        r.split(
            f,
            cmds(&[&["MSET", "{t}a", "1", "{t}b", "2"]]),
            Some(Lsn(20)),
        );
        assert!(must_wait(&mut r, f, &cmds(&[&["SET", "{t}b", "x"]])));
        assert!(must_wait(
            &mut r,
            f,
            &cmds(&[&["SET", "z", "1"], &["SUNIONSTORE", "{t}d", "{t}a"]])
        ));
        assert!(!must_wait(
            &mut r,
            f,
            &cmds(&[&["SET", "{t}c", "x"], &["SET", "b", "1"]])
        ));
        // The snapshot phase (no position) notes nothing.
        let _ = r.split(f, cmds(&[&["MSET", "{u}a", "1", "{u}b", "2"]]), None);
        assert!(!must_wait(&mut r, f, &cmds(&[&["SET", "{u}a", "x"]])));
        // Acknowledged up to 20: nothing to wait for.
        r.ctx.tracker.register(f, 0, Some(Lsn(20)));
        assert!(!must_wait(&mut r, f, &cmds(&[&["SET", "{t}b", "x"]])));
        // Two one-key commands of one slot in one batch are one group of two keys.
        r.split(
            f,
            cmds(&[
                &["INCR", "{t}a"],
                &["SET", "x", "1"],
                &["APPEND", "{t}b", "y"],
            ]),
            Some(Lsn(30)),
        );
        assert!(must_wait(&mut r, f, &cmds(&[&["INCR", "{t}a"]])));
        assert!(!must_wait(&mut r, f, &cmds(&[&["INCR", "x"]])));
    }

    #[test]
    fn the_resume_skips_what_the_high_water_or_a_range_covers() {
        let mut a = SlotApplied::high(Lsn(10));
        // A group (10, 20] refused after the group (20, 30] ran: only the latter is covered.
        a.set_range(0, Lsn(20), Lsn(30));
        let r = routing(HashMap::from([(7, a)]));
        assert_eq!(r.skip_until, Lsn(30));
        assert!(r.applied_before(7, Lsn(10)));
        assert!(!r.applied_before(7, Lsn(15)) && !r.applied_before(7, Lsn(20)));
        assert!(r.applied_before(7, Lsn(25)) && r.applied_before(7, Lsn(30)));
        assert!(!r.applied_before(7, Lsn(31)));
        assert!(!r.applied_before(8, Lsn(1)));
    }

    #[test]
    fn only_the_entrys_last_write_marks_a_transfer() {
        let step = |args: &[&str]| Step::Transfer {
            t: transfer(args),
            cmd: Cmd::from_args(args),
            mark: None,
            finish: false,
        };
        let marks = |steps: &[Step]| -> Vec<Option<Lsn>> {
            steps
                .iter()
                .filter_map(|s| match s {
                    Step::Transfer { mark, .. } => Some(*mark),
                    _ => None,
                })
                .collect()
        };
        let end = Some(Lsn(7));
        // One command per entry (v1.21+): the transfer is the last write.
        let mut one = vec![step(&["RENAME", "foo", "bar"])];
        mark_last_transfer(&mut one, end);
        assert_eq!(marks(&one), [end]);
        // A refused command after it writes nothing: still the last write.
        let mut refused = vec![
            step(&["RENAME", "foo", "bar"]),
            Step::Refused(Cmd::from_args(["SMOVE", "foo", "bar", "m"]), "r"),
        ];
        mark_last_transfer(&mut refused, end);
        assert_eq!(marks(&refused), [end]);
        // A pre-v1.21 group: a write after the first transfer leaves it unmarked; the
        // second transfer, last, is marked.
        let mut group = vec![
            step(&["RENAME", "foo", "bar"]),
            Step::Cmd(Cmd::from_args(["SET", "foo", "1"])),
            step(&["COPY", "bar", "foo"]),
        ];
        mark_last_transfer(&mut group, end);
        assert_eq!(marks(&group), [None, end]);
        let mut before = vec![
            step(&["RENAME", "foo", "bar"]),
            Step::Cmd(Cmd::from_args(["SET", "foo", "1"])),
        ];
        mark_last_transfer(&mut before, end);
        assert_eq!(marks(&before), [None]);
    }
}
