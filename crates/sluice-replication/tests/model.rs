//! An exhaustive model check of ISR replication for one partition on three brokers, with the
//! real controller (`sluice_metadata::Controller`) deciding elections and ISR changes.
//!
//! From a partition of three in-sync replicas, every interleaving of these steps is explored,
//! breadth first, up to the bounds below:
//! - the leader appends a record (acks=all, refused below `min.insync.replicas` = 2);
//! - a follower fetches from the leader it knows, if that broker still leads in that epoch
//!   (a deposed leader that has not heard yet keeps serving: the zombie case);
//! - time passes (followers that did not fetch since fall behind `replica.lag.time.max.ms`);
//! - a leader asks for an ISR change; the controller decides (or refuses a stale one); its
//!   answer reaches the leader later, possibly after newer metadata did;
//! - a broker crashes (its log survives; its role does not); the controller fences it
//!   (moving its leadership to another ISR member); it restarts as a new process and is
//!   unfenced; a broker learns the partition's current leader and epoch from the metadata,
//!   and a leader the ISR the controller changed without it (by fencing a member).
//!
//! In every state reached it checks that
//! - every acknowledged record is in the log of every replica in the controller's ISR and
//!   of every eligible leader replica (KIP-966: the high watermark stands still while the
//!   ISR is below `min.insync.replicas`, and the controller may elect one of them), at
//!   its offset, with its epoch (so whoever is elected next has it), and on at least
//!   `min.insync.replicas` replicas;
//! - every record a leader's high watermark passed, acknowledged or not (consumers may have
//!   read it), is in the log of every ISR member and eligible leader replica;
//! - two logs that hold a record of the same epoch at the same offset agree on everything
//!   before it (Kafka's log matching);
//! - no two brokers act as leader in the same epoch (a deposed one acts in an older one);
//!
//! and the leader's own assertions hold (high watermark never above its log end, never
//! moving back). From every eighth state it also stops the faults and runs the protocol to
//! rest: every replica must then hold the leader's log, back in the ISR. A record counts as acknowledged once the leader that appended it, still
//! leading in that epoch, has moved its high watermark past it with an ISR of at least
//! `min.insync.replicas` (else the produce fails with NOT_ENOUGH_REPLICAS_AFTER_APPEND).

use std::collections::{HashSet, VecDeque};

use sluice_metadata::records::NO_LEADER;
use sluice_metadata::{
    AlterPartition, Controller, ControllerConfig, Endpoint, Heartbeat, MetadataImage, NewTopic,
    RegistrationRequest,
};
use sluice_replication::{
    follower_high_watermark, truncation_offset, AckStatus, Elected, EpochLog, FetchAnswer,
    IsrChange, LeaderState,
};
use uuid::Uuid;

const BROKERS: [i32; 3] = [1, 2, 3];
const MIN_INSYNC_REPLICAS: usize = 2;
const LAG_MAX_MS: i64 = 1;
const TOPIC_ID: Uuid = Uuid::from_u128(7);

/// Bounds of the exploration.
#[derive(Clone, Copy)]
struct Bounds {
    appends: u8,
    crashes: u8,
    ticks: u8,
}

/// A log as the model holds it: the epoch and value of each record.
struct VecLog<'a>(&'a [(i32, u8)]);

impl EpochLog for VecLog<'_> {
    fn log_end_offset(&self) -> i64 {
        self.0.len() as i64
    }

    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let found = self.0.iter().map(|r| r.0).filter(|&e| e <= epoch).max()?;
        let end = self
            .0
            .iter()
            .position(|r| r.0 > found)
            .unwrap_or(self.0.len());
        Some((found, end as i64))
    }

    fn latest_epoch(&self) -> Option<i32> {
        self.0.last().map(|r| r.0)
    }

    fn min_insync_replicas(&self) -> usize {
        MIN_INSYNC_REPLICAS
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Role {
    /// Does not know who leads (just started, or no leader).
    Unknown,
    Follower {
        leader: i32,
        epoch: i32,
    },
    Leader(LeaderState),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Replica {
    alive: bool,
    log: Vec<(i32, u8)>,
    high_watermark: i64,
    role: Role,
    /// The newest leader epoch this broker has learned of.
    known_epoch: i32,
    broker_epoch: i64,
    incarnation: u8,
}

/// What the controller committed for an AlterPartition: the ISR, the partition epoch, the
/// leader epoch and whether it lists eligible leader replicas; `None` in its place is a
/// refusal.
type Committed = (Vec<i32>, i32, i32, bool);

#[derive(Clone)]
struct World {
    controller: Controller,
    replicas: Vec<Replica>,
    /// An AlterPartition on its way to the controller.
    alter: Option<(i32, IsrChange)>,
    /// The controller's answers on their way back to the brokers that asked, in any order.
    answers: Vec<(i32, IsrChange, Option<Committed>)>,
    /// Appended, not answered yet: (offset, epoch, value).
    pending_acks: Vec<(i64, i32, u8)>,
    acked: Vec<(i64, i32, u8)>,
    /// Records a leader's high watermark passed, acknowledged or not (an acks=all produce
    /// answered NOT_ENOUGH_REPLICAS_AFTER_APPEND): consumers may have read them.
    visible: Vec<(i64, i32, u8)>,
    now: i64,
    appends: u8,
    crashes: u8,
    ticks: u8,
    leader_changes: u8,
    /// Leaders the controller elected from the eligible leader replicas (KIP-966).
    elr_elections: u8,
}

fn index(broker: i32) -> usize {
    (broker - 1) as usize
}

impl World {
    fn new() -> Self {
        let config = ControllerConfig {
            min_insync_replicas: MIN_INSYNC_REPLICAS as i32,
            ..ControllerConfig::default()
        };
        let mut controller = Controller::new(config, MetadataImage::default(), 0);
        let mut replicas = Vec::new();
        for b in BROKERS {
            let (epoch, _) = controller
                .register_broker(registration(b, 0), 0)
                .expect("registers");
            controller
                .heartbeat(beat(b, epoch, false), 0)
                .expect("unfences");
            replicas.push(Replica {
                alive: true,
                log: Vec::new(),
                high_watermark: 0,
                role: Role::Unknown,
                known_epoch: -1,
                broker_epoch: epoch,
                incarnation: 0,
            });
        }
        controller
            .create_topic(NewTopic {
                name: "t".into(),
                topic_id: TOPIC_ID,
                num_partitions: -1,
                replication_factor: -1,
                assignments: vec![BROKERS.to_vec()],
                configs: Vec::new(),
            })
            .expect("creates");
        Self {
            controller,
            replicas,
            alter: None,
            answers: Vec::new(),
            pending_acks: Vec::new(),
            acked: Vec::new(),
            visible: Vec::new(),
            now: 0,
            appends: 0,
            crashes: 0,
            ticks: 0,
            leader_changes: 0,
            elr_elections: 0,
        }
    }

    /// Everything that determines what can happen next.
    fn key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{}|{}",
            self.controller.image(),
            self.replicas,
            self.alter,
            self.answers,
            self.pending_acks,
            self.acked,
            self.visible,
            self.now,
            self.appends,
            self.crashes,
            self.ticks
        )
    }

    fn partition(&self) -> sluice_metadata::PartitionRegistration {
        self.controller
            .image()
            .partition(TOPIC_ID, 0)
            .expect("the partition exists")
            .clone()
    }

    /// Answers the produces whose records are now committed, and fails those whose leader
    /// lost its leadership (the client retries, as a new record).
    fn settle_acks(&mut self) {
        let replicas = &self.replicas;
        let (mut acked, mut visible) = (Vec::new(), Vec::new());
        self.pending_acks.retain(|&(offset, epoch, value)| {
            let leader = replicas
                .iter()
                .find(|r| r.alive && matches!(&r.role, Role::Leader(l) if l.leader_epoch == epoch));
            match leader {
                Some(Replica {
                    role: Role::Leader(l),
                    ..
                }) => match l.ack_status(offset, MIN_INSYNC_REPLICAS) {
                    AckStatus::Waiting => true,
                    AckStatus::Committed => {
                        acked.push((offset, epoch, value));
                        visible.push((offset, epoch, value));
                        false
                    }
                    AckStatus::NotEnoughReplicasAfterAppend => {
                        visible.push((offset, epoch, value));
                        false
                    }
                },
                _ => false,
            }
        });
        self.acked.extend(acked);
        self.visible.extend(visible);
    }

    fn check(&self) -> Result<(), String> {
        let p = self.partition();
        for &(offset, epoch, value) in &self.acked {
            let copies = self
                .replicas
                .iter()
                .filter(|r| r.log.get(offset as usize) == Some(&(epoch, value)))
                .count();
            if copies < MIN_INSYNC_REPLICAS {
                return Err(format!(
                    "acknowledged record {value} (offset {offset}) is on {copies} replicas, \
                     fewer than min.insync.replicas"
                ));
            }
            for &b in p.isr.iter().chain(&p.elr) {
                let log = &self.replicas[index(b)].log;
                if log.get(offset as usize) != Some(&(epoch, value)) {
                    return Err(format!(
                        "acknowledged record {value} (offset {offset}, epoch {epoch}) is not on \
                         ISR or eligible member {b} (ISR {:?}, ELR {:?}): {log:?}",
                        p.isr, p.elr
                    ));
                }
            }
        }
        // What consumers may have read stays readable: it is on whoever may be elected.
        for &(offset, epoch, value) in &self.visible {
            for &b in p.isr.iter().chain(&p.elr) {
                let log = &self.replicas[index(b)].log;
                if log.get(offset as usize) != Some(&(epoch, value)) {
                    return Err(format!(
                        "record {value} (offset {offset}, epoch {epoch}), below a leader's high \
                         watermark, is not on ISR or eligible member {b} (ISR {:?}, ELR {:?}): \
                         {log:?}",
                        p.isr, p.elr
                    ));
                }
            }
        }
        for a in &self.replicas {
            for b in &self.replicas {
                let common = a.log.len().min(b.log.len());
                for o in (0..common).rev() {
                    if a.log[o].0 == b.log[o].0 && a.log[..=o] != b.log[..=o] {
                        return Err(format!(
                            "logs agree on the epoch at {o} but not before: {:?} vs {:?}",
                            a.log, b.log
                        ));
                    }
                }
            }
        }
        // One leader per epoch: a deposed leader that has not heard yet acts in an older one.
        let mut leading: Vec<i32> = self
            .replicas
            .iter()
            .filter(|r| r.alive)
            .filter_map(|r| match &r.role {
                Role::Leader(l) => Some(l.leader_epoch),
                _ => None,
            })
            .collect();
        leading.sort_unstable();
        if leading.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("two replicas lead in one epoch: {leading:?}"));
        }
        Ok(())
    }

    fn successors(&self, bounds: Bounds) -> Vec<(String, World)> {
        let mut next = Vec::new();
        let p = self.partition();
        for b in BROKERS {
            let r = &self.replicas[index(b)];
            if r.alive {
                if let Role::Leader(l) = &r.role {
                    if self.appends < bounds.appends && l.enough_replicas(MIN_INSYNC_REPLICAS) {
                        let mut w = self.clone();
                        let value = w.appends;
                        w.appends += 1;
                        let r = &mut w.replicas[index(b)];
                        let Role::Leader(l) = &mut r.role else {
                            unreachable!()
                        };
                        r.log.push((l.leader_epoch, value));
                        l.on_append(&VecLog(&r.log));
                        w.pending_acks
                            .push((r.log.len() as i64 - 1, l.leader_epoch, value));
                        next.push((format!("{b} appends {value}"), w));
                    }
                    // A new request may go out while an answer to an older one is still on
                    // its way (at most two in flight, to bound the exploration).
                    if self.alter.is_none() && self.answers.len() < 2 {
                        let mut w = self.clone();
                        let now = w.now;
                        let r = &mut w.replicas[index(b)];
                        let Role::Leader(l) = &mut r.role else {
                            unreachable!()
                        };
                        if let Some(change) = l.isr_change(now, LAG_MAX_MS) {
                            let what = format!("{b} asks for ISR {:?}", change.new_isr);
                            w.alter = Some((b, change));
                            next.push((what, w));
                        }
                    }
                }
                if let Role::Follower { leader, epoch } = r.role {
                    let l = &self.replicas[index(leader)];
                    let serving =
                        l.alive && matches!(&l.role, Role::Leader(ls) if ls.leader_epoch == epoch);
                    if serving {
                        next.push((format!("{b} fetches from {leader}"), self.fetch(b, leader)));
                    }
                }
                // Learn the partition's state from the metadata.
                let learn = match &r.role {
                    _ if p.leader_epoch > r.known_epoch => true,
                    Role::Unknown => p.leader != NO_LEADER,
                    // The controller changed the ISR itself (it fenced a member).
                    Role::Leader(l) => p.partition_epoch > l.partition_epoch,
                    Role::Follower { .. } => false,
                };
                if learn {
                    next.push((
                        format!("{b} learns epoch {}", p.leader_epoch),
                        self.learn(b),
                    ));
                }
                if self.crashes < bounds.crashes {
                    let mut w = self.clone();
                    w.crashes += 1;
                    let r = &mut w.replicas[index(b)];
                    r.alive = false;
                    r.role = Role::Unknown;
                    next.push((format!("{b} crashes"), w));
                }
            } else {
                let registered = self.controller.image().broker(b).expect("registered");
                if !registered.fenced {
                    let mut w = self.clone();
                    let epoch = w.replicas[index(b)].broker_epoch;
                    let fence = Heartbeat {
                        want_fence: true,
                        ..beat(b, epoch, true)
                    };
                    let before = w.partition();
                    w.controller.heartbeat(fence, w.now).expect("fences");
                    let after = w.partition();
                    if after.leader != before.leader && before.elr.contains(&after.leader) {
                        w.elr_elections = w.elr_elections.saturating_add(1);
                    }
                    next.push((format!("controller fences {b}"), w));
                } else {
                    next.push((format!("{b} restarts"), self.restart(b)));
                }
            }
        }
        for i in 0..self.answers.len() {
            next.push((format!("answer {i} arrives"), self.receive(i)));
        }
        if let Some((b, change)) = &self.alter {
            next.push((
                format!("controller answers {b}'s ISR change"),
                self.deliver(*b, change),
            ));
        }
        if self.ticks < bounds.ticks {
            let mut w = self.clone();
            w.ticks += 1;
            w.now += LAG_MAX_MS + 1;
            next.push(("time passes".into(), w));
        }
        for (_, w) in &mut next {
            let before = p.leader;
            w.settle_acks();
            if w.partition().leader != before {
                w.leader_changes = w.leader_changes.saturating_add(1);
            }
        }
        next
    }

    fn fetch(&self, follower: i32, leader: i32) -> World {
        let mut w = self.clone();
        let now = w.now;
        let (fetch_offset, last_epoch) = {
            let f = &w.replicas[index(follower)];
            (f.log.len() as i64, f.log.last().map(|r| r.0))
        };
        let leader_log = w.replicas[index(leader)].log.clone();
        let answer = {
            let Role::Leader(l) = &mut w.replicas[index(leader)].role else {
                unreachable!("fetches go to a leader")
            };
            l.on_fetch(
                follower,
                fetch_offset,
                last_epoch,
                &VecLog(&leader_log),
                now,
            )
        };
        let f = &mut w.replicas[index(follower)];
        match answer {
            FetchAnswer::Records { high_watermark } => {
                f.log
                    .extend_from_slice(&leader_log[fetch_offset as usize..]);
                f.high_watermark = follower_high_watermark(&VecLog(&f.log), high_watermark);
            }
            FetchAnswer::Diverging { epoch, end_offset } => {
                let at = truncation_offset(&VecLog(&f.log), epoch, end_offset);
                f.log.truncate(at as usize);
                f.high_watermark = f.high_watermark.min(at);
            }
            FetchAnswer::OffsetOutOfRange | FetchAnswer::NotAReplica => {}
        }
        w
    }

    fn learn(&self, b: i32) -> World {
        let mut w = self.clone();
        let p = w.partition();
        let now = w.now;
        let r = &mut w.replicas[index(b)];
        if let Role::Leader(l) = &mut r.role {
            if l.leader_epoch == p.leader_epoch {
                l.on_partition_state(&p.isr, p.partition_epoch, &VecLog(&r.log));
                l.on_eligible_leaders(!p.elr.is_empty());
                return w;
            }
        }
        r.known_epoch = r.known_epoch.max(p.leader_epoch);
        r.role = if p.leader == b {
            let elected = Elected {
                leader_id: b,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                replicas: &p.replicas,
                isr: &p.isr,
            };
            let mut l = LeaderState::become_leader(elected, &VecLog(&r.log), r.high_watermark, now);
            l.on_eligible_leaders(!p.elr.is_empty());
            Role::Leader(l)
        } else if p.leader == NO_LEADER {
            Role::Unknown
        } else {
            Role::Follower {
                leader: p.leader,
                epoch: p.leader_epoch,
            }
        };
        w
    }

    fn restart(&self, b: i32) -> World {
        let mut w = self.clone();
        let now = w.now;
        let r = &mut w.replicas[index(b)];
        r.alive = true;
        r.incarnation += 1;
        let incarnation = r.incarnation;
        let (epoch, _) = w
            .controller
            .register_broker(registration(b, incarnation), now)
            .expect("a fenced broker re-registers");
        w.controller
            .heartbeat(beat(b, epoch, false), now)
            .expect("unfences");
        w.replicas[index(b)].broker_epoch = epoch;
        w
    }

    fn deliver(&self, b: i32, change: &IsrChange) -> World {
        let mut w = self.clone();
        w.alter = None;
        let request = AlterPartition {
            broker_id: b,
            broker_epoch: w.replicas[index(b)].broker_epoch,
            topic_id: TOPIC_ID,
            partition: 0,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            new_isr: change.new_isr.clone(),
        };
        let answer = w.controller.alter_partition(request);
        let answer = answer
            .ok()
            .map(|(p, _)| (p.isr, p.partition_epoch, p.leader_epoch, !p.elr.is_empty()));
        w.answers.push((b, change.clone(), answer));
        w
    }

    /// The controller's `i`th answer reaches the broker that asked (if it still leads),
    /// possibly after the metadata has brought it a newer state, or after a newer request.
    fn receive(&self, i: usize) -> World {
        let mut w = self.clone();
        let (b, change, answer) = w.answers.remove(i);
        let r = &mut w.replicas[index(b)];
        if let (true, Role::Leader(l)) = (r.alive, &mut r.role) {
            let committed = answer
                .as_ref()
                .filter(|a| a.2 == l.leader_epoch)
                .map(|(isr, partition_epoch, _, _)| (isr.as_slice(), *partition_epoch));
            l.on_alter_answer(&change, committed, &VecLog(&r.log));
            // The broker's publisher applies the committed state (eligible leader replicas
            // with it) before the answer reaches the leader.
            if let Some((_, partition_epoch, _, eligible)) =
                answer.filter(|a| a.2 == l.leader_epoch)
            {
                if partition_epoch == l.partition_epoch {
                    l.on_eligible_leaders(eligible);
                }
            }
        }
        w
    }
}

impl World {
    /// Stops the faults and runs the protocol to rest: dead brokers are fenced and restart,
    /// everyone learns the metadata, followers fetch, leaders' ISR changes are answered. Then
    /// every replica must hold the leader's log, in the ISR, with the high watermark at its
    /// end: the protocol converges once faults stop.
    fn settles(&self) -> Result<(), String> {
        let mut w = self.clone();
        for _round in 0..20 {
            for b in BROKERS {
                if !w.replicas[index(b)].alive {
                    if !w.controller.image().broker(b).expect("registered").fenced {
                        let epoch = w.replicas[index(b)].broker_epoch;
                        let fence = Heartbeat {
                            want_fence: true,
                            ..beat(b, epoch, true)
                        };
                        w.controller.heartbeat(fence, w.now).expect("fences");
                    }
                    w = w.restart(b);
                }
            }
            for b in BROKERS {
                let p = w.partition();
                let r = &w.replicas[index(b)];
                let stale_leader =
                    matches!(&r.role, Role::Leader(l) if p.partition_epoch > l.partition_epoch);
                if p.leader_epoch > r.known_epoch
                    || (r.role == Role::Unknown && p.leader != NO_LEADER)
                    || stale_leader
                {
                    w = w.learn(b);
                }
            }
            if let Some((b, change)) = w.alter.clone() {
                w = w.deliver(b, &change);
            }
            while !w.answers.is_empty() {
                w = w.receive(0);
            }
            for b in BROKERS {
                if let Role::Follower { leader, epoch } = w.replicas[index(b)].role {
                    let l = &w.replicas[index(leader)];
                    if matches!(&l.role, Role::Leader(ls) if ls.leader_epoch == epoch) {
                        w = w.fetch(b, leader);
                    }
                }
            }
            for b in BROKERS {
                let now = w.now;
                let r = &mut w.replicas[index(b)];
                if let Role::Leader(l) = &mut r.role {
                    if let Some(change) = l.isr_change(now, LAG_MAX_MS) {
                        w = w.deliver(b, &change);
                        let last = w.answers.len() - 1;
                        w = w.receive(last);
                    }
                }
            }
            w.settle_acks();
        }
        let p = w.partition();
        let Some(leader) = BROKERS.iter().find(|&&b| b == p.leader) else {
            return Err(format!("no leader after the faults stopped: {p:?}"));
        };
        let led = &w.replicas[index(*leader)];
        let Role::Leader(l) = &led.role else {
            return Err(format!("broker {leader} does not act as leader"));
        };
        if p.isr.len() != BROKERS.len() {
            return Err(format!("the ISR did not grow back: {p:?}"));
        }
        if l.high_watermark() != led.log.len() as i64 {
            return Err(format!("the high watermark stays below the log end: {l:?}"));
        }
        for r in &w.replicas {
            if r.log != led.log {
                return Err(format!(
                    "a replica did not converge: {:?} vs {:?}",
                    r.log, led.log
                ));
            }
        }
        w.check()
    }
}

fn registration(b: i32, incarnation: u8) -> RegistrationRequest {
    RegistrationRequest {
        broker_id: b,
        incarnation_id: Uuid::from_u128(((b as u128) << 8) | incarnation as u128),
        endpoints: vec![Endpoint {
            listener: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
            security_protocol: 0,
        }],
        rack: None,
        previous_broker_epoch: -1,
    }
}

fn beat(b: i32, broker_epoch: i64, want_fence: bool) -> Heartbeat {
    Heartbeat {
        broker_id: b,
        broker_epoch,
        caught_up: true,
        want_fence,
        want_shut_down: false,
    }
}

/// Explores every state within `bounds`; returns (states, states with a record acknowledged
/// after a leader change, states after a leader elected from the eligible leader replicas
/// with a record acknowledged) or the first violation with the steps that led to it.
fn explore(bounds: Bounds) -> Result<(usize, usize, usize), String> {
    let start = World::new();
    let mut seen = HashSet::new();
    seen.insert(start.key());
    let mut queue = VecDeque::from([(start, Vec::<String>::new())]);
    let (mut interesting, mut eligible) = (0, 0);
    while let Some((world, path)) = queue.pop_front() {
        for (step, next) in world.successors(bounds) {
            let mut path = path.clone();
            path.push(step);
            if let Err(why) = next.check() {
                return Err(format!("{why}\nafter:\n  {}", path.join("\n  ")));
            }
            if seen.insert(next.key()) {
                // Convergence is checked from every eighth new state (it runs the protocol
                // for 20 rounds each time).
                if seen.len() % 8 == 0 {
                    if let Err(why) = next.settles() {
                        let steps = path.join("\n  ");
                        return Err(format!("{why}\nonce faults stopped after:\n  {steps}"));
                    }
                }
                if next.leader_changes > 0 && !next.acked.is_empty() {
                    interesting += 1;
                }
                if next.elr_elections > 0 && !next.acked.is_empty() {
                    eligible += 1;
                }
                queue.push_back((next, path));
            }
        }
    }
    Ok((seen.len(), interesting, eligible))
}

#[test]
fn every_interleaving_keeps_acknowledged_records_on_the_isr_and_logs_matching() {
    // SLUICE_MODEL_BOUNDS=appends,crashes,ticks explores further than CI does.
    let bounds = match std::env::var("SLUICE_MODEL_BOUNDS") {
        Ok(s) => {
            let n: Vec<u8> = s.split(',').map(|x| x.parse().expect("a number")).collect();
            Bounds {
                appends: n[0],
                crashes: n[1],
                ticks: n[2],
            }
        }
        Err(_) => Bounds {
            appends: 2,
            crashes: 1,
            ticks: 1,
        },
    };
    let (states, interesting, eligible) = explore(bounds).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{states} states; {interesting} with a record acknowledged and a leader change, \
         {eligible} of them after a leader elected from the eligible leader replicas"
    );
    assert!(
        interesting > 0,
        "the exploration never acknowledged a record across a leader change"
    );
    assert!(
        eligible > 0,
        "the exploration never elected an eligible leader replica after an acknowledgement"
    );
}
