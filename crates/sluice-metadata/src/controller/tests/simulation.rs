//! A seeded simulation of brokers around one controller: registrations, heartbeats at random
//! intervals, crashes (the process stops without a word), restarts as new processes (most
//! with their data, naming their last registration; some without),
//! controlled shutdowns, topic creation and deletion, leaders shrinking and growing their
//! ISRs (sometimes with stale epochs), preferred elections, heartbeats from replaced
//! processes, controller failover from a snapshot, and calls whose records are lost because
//! the controller lost its leadership before they were committed.
//!
//! After every step it checks, on the image replayed from the committed log:
//! - it equals the controller's own image (one replay path), and its snapshot loads to it;
//! - every leader is a registered, unfenced broker;
//! - leader and partition epochs never go backwards;
//! - a new leader was in the ISR or among the eligible leader replicas before the step (no
//!   unclean election: none is enabled); half the seeds run with `min.insync.replicas=2`,
//!   where replicas leave ISRs into the eligible leader replicas (KIP-966) and some are
//!   elected from there;
//! - an ISR grows only when its leader asked (AlterPartition), only by eligible brokers, or
//!   to an eligible leader replica elected;
//! - a heartbeat from a replaced process is refused as STALE_BROKER_EPOCH;
//!
//! and, after a quiet period in which every broker runs and heartbeats, that every broker is
//! unfenced and every partition has a leader.
//!
//! `SLUICE_SIM_SEED=n` replays one seed with a trace of its steps; `SLUICE_SIM_SEEDS=n` runs
//! n seeds (default 500).

use super::*;

const BROKERS: i32 = 4;
const CHAOS_STEPS: usize = 300;
const HEARTBEAT_MS: i64 = 2_000;

#[derive(Debug, Clone)]
struct Node {
    id: i32,
    running: bool,
    incarnation: u128,
    epoch: Option<i64>,
    /// Epochs of processes of this id that have been replaced.
    old_epochs: Vec<i64>,
    next_heartbeat_ms: i64,
    shutting_down: bool,
}

struct Sim {
    seed: u64,
    rng: u64,
    now: i64,
    config: ControllerConfig,
    controller: Controller,
    /// The image every other node builds: the committed log replayed.
    committed: MetadataImage,
    nodes: Vec<Node>,
    topics_made: u32,
    /// Leaders elected from the eligible leader replicas.
    elr_elections: usize,
    trace: Vec<String>,
    verbose: bool,
}

type Check = Result<(), String>;

impl Sim {
    fn new(seed: u64, verbose: bool) -> Self {
        let config = ControllerConfig {
            min_insync_replicas: if seed.is_multiple_of(2) { 2 } else { 1 },
            ..ControllerConfig::default()
        };
        let nodes = (1..=BROKERS)
            .map(|id| Node {
                id,
                running: false,
                incarnation: 0,
                epoch: None,
                old_epochs: Vec::new(),
                next_heartbeat_ms: 0,
                shutting_down: false,
            })
            .collect();
        Self {
            seed,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            now: T0,
            controller: Controller::new(config.clone(), MetadataImage::default(), T0),
            config,
            committed: MetadataImage::default(),
            nodes,
            topics_made: 0,
            elr_elections: 0,
            trace: Vec::new(),
            verbose,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn note(&mut self, s: String) {
        if self.verbose {
            eprintln!("[{}] {s}", self.now);
        }
        self.trace.push(s);
        if self.trace.len() > 40 {
            self.trace.remove(0);
        }
    }

    fn fail<T>(&self, why: String) -> Result<T, String> {
        Err(format!(
            "seed {} at t={}: {why}\nlast steps:\n  {}",
            self.seed,
            self.now,
            self.trace.join("\n  ")
        ))
    }

    /// The records of one controller call reach the log, or (rarely) are lost with the
    /// controller's leadership: then a new controller starts from what was committed.
    fn commit(&mut self, records: Vec<MetadataRecord>) -> bool {
        if records.is_empty() {
            return true;
        }
        if self.chance(3) {
            self.note(format!(
                "lost {} records with the leadership",
                records.len()
            ));
            self.controller =
                Controller::new(self.config.clone(), self.committed.clone(), self.now);
            return false;
        }
        if let Err(e) = self.committed.apply_all(&records) {
            panic!("seed {}: committed records do not replay: {e}", self.seed);
        }
        true
    }

    /// Runs the schedule; returns how many leaders it elected from eligible replicas.
    fn run(mut self) -> Result<usize, String> {
        for _ in 0..CHAOS_STEPS {
            let before = self.committed.clone();
            let grew_by_request = self.step()?;
            self.check(&before, grew_by_request)?;
            self.elr_elections += elected_from_elr(&before, &self.committed);
        }
        let elected = self.elr_elections;
        self.settle().map(|()| elected)
    }

    /// One random action; returns the partitions whose ISR a leader asked to grow.
    fn step(&mut self) -> Result<Vec<(Uuid, i32)>, String> {
        match self.below(100) {
            0..=29 => self.advance_time()?,
            30..=37 => {
                let i = self.below(self.nodes.len() as u64) as usize;
                if self.nodes[i].running {
                    self.nodes[i].running = false;
                    self.note(format!("broker {} crashes", self.nodes[i].id));
                }
            }
            38..=49 => {
                let i = self.below(self.nodes.len() as u64) as usize;
                if !self.nodes[i].running {
                    self.start(i)?;
                }
            }
            50..=53 => {
                let i = self.below(self.nodes.len() as u64) as usize;
                if self.nodes[i].running && self.nodes[i].epoch.is_some() {
                    self.nodes[i].shutting_down = true;
                    self.note(format!(
                        "broker {} begins a controlled shutdown",
                        self.nodes[i].id
                    ));
                }
            }
            54..=61 => self.create_topic()?,
            62..=63 => self.delete_topic(),
            64..=85 => return self.alter_isr(),
            86..=88 => self.preferred_election()?,
            89..=90 => self.reassign()?,
            91..=94 => self.stale_heartbeat()?,
            _ => {
                self.note("controller fails over from a snapshot".into());
                let bytes = encode_snapshot(&self.committed);
                let loaded = decode_snapshot(&bytes).map_err(|e| e.to_string())?;
                if loaded != self.committed {
                    return self.fail("the snapshot does not load to the image".into());
                }
                self.controller = Controller::new(self.config.clone(), loaded, self.now);
            }
        }
        Ok(Vec::new())
    }

    fn start(&mut self, i: usize) -> Check {
        // Three starts in four keep their data directory and name the registration it
        // last held (a broker's `broker-epoch.json`); the fourth comes back without it.
        let keeps_data = self.below(4) != 0;
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.running = true;
        node.shutting_down = false;
        let previous = node.epoch.take();
        if let Some(old) = previous {
            node.old_epochs.push(old);
        }
        let request = RegistrationRequest {
            broker_id: node.id,
            incarnation_id: incarnation(node.id, node.incarnation),
            endpoints: vec![endpoint(node.id)],
            rack: None,
            previous_broker_epoch: previous.filter(|_| keeps_data).unwrap_or(-1),
        };
        let id = node.id;
        self.register(i, request)?;
        self.note(format!(
            "broker {id} starts: epoch {:?}",
            self.nodes[i].epoch
        ));
        Ok(())
    }

    fn register(&mut self, i: usize, request: RegistrationRequest) -> Check {
        match self.controller.register_broker(request, self.now) {
            Ok((epoch, records)) => {
                if self.commit(records) {
                    self.nodes[i].epoch = Some(epoch);
                    self.nodes[i].next_heartbeat_ms = self.now + HEARTBEAT_MS;
                }
                Ok(())
            }
            // The previous process's session has not expired yet: retry on a later beat.
            Err(e) if e.code == codes::DUPLICATE_BROKER_REGISTRATION => Ok(()),
            Err(e) => self.fail(format!("registration refused: {e:?}")),
        }
    }

    fn advance_time(&mut self) -> Check {
        self.now += self.below(3_000) as i64;
        for i in 0..self.nodes.len() {
            let node = self.nodes[i].clone();
            if !node.running || node.next_heartbeat_ms > self.now {
                continue;
            }
            self.nodes[i].next_heartbeat_ms = self.now + HEARTBEAT_MS;
            let Some(epoch) = node.epoch else {
                let request = RegistrationRequest {
                    broker_id: node.id,
                    incarnation_id: incarnation(node.id, node.incarnation),
                    endpoints: vec![endpoint(node.id)],
                    rack: None,
                    previous_broker_epoch: -1,
                };
                self.register(i, request)?;
                continue;
            };
            let hb = Heartbeat {
                want_shut_down: node.shutting_down,
                ..beat(node.id, epoch)
            };
            match self.controller.heartbeat(hb, self.now) {
                Ok((reply, records)) => {
                    let committed = self.commit(records);
                    if committed && reply.should_shut_down {
                        self.nodes[i].running = false;
                        self.note(format!("broker {} shuts down cleanly", node.id));
                    }
                }
                // Replaced after its session expired and another start registered.
                Err(e) if e.code == codes::STALE_BROKER_EPOCH => {
                    return self.fail(format!("a live broker's own epoch is stale: {e:?}"))
                }
                Err(e) if e.code == codes::BROKER_ID_NOT_REGISTERED => {
                    // Its registration was lost with a leadership: register again.
                    self.nodes[i].epoch = None;
                }
                Err(e) => return self.fail(format!("heartbeat refused: {e:?}")),
            }
        }
        let records = self.controller.tick(self.now);
        if !records.is_empty() {
            self.note(format!("tick fences: {} records", records.len()));
        }
        self.commit(records);
        Ok(())
    }

    fn create_topic(&mut self) -> Check {
        self.topics_made += 1;
        let name = format!("t{}", self.topics_made);
        let partitions = 1 + self.below(4) as i32;
        let factor = 1 + self.below(3) as i16;
        let eligible = self
            .controller
            .image()
            .brokers()
            .filter(|b| b.is_eligible())
            .count();
        let t = NewTopic {
            name: name.clone(),
            topic_id: Uuid::from_u128(self.topics_made as u128 + (self.seed as u128) * 1_000_000),
            num_partitions: partitions,
            replication_factor: factor,
            assignments: Vec::new(),
            configs: Vec::new(),
        };
        match self.controller.create_topic(t) {
            Ok(records) => {
                self.note(format!(
                    "create {name}: {partitions} partitions, rf {factor}"
                ));
                self.commit(records);
                Ok(())
            }
            Err(e) if e.code == codes::INVALID_REPLICATION_FACTOR && factor as usize > eligible => {
                Ok(())
            }
            Err(e) => self.fail(format!("create {name} refused: {e:?}")),
        }
    }

    fn delete_topic(&mut self) {
        let names: Vec<String> = self
            .controller
            .image()
            .topics()
            .map(|t| t.name.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        let name = names[self.below(names.len() as u64) as usize].clone();
        let records = self.controller.delete_topic(&name).expect("it exists");
        self.note(format!("delete {name}"));
        self.commit(records);
    }

    fn random_partition(&mut self) -> Option<(Uuid, i32, PartitionRegistration)> {
        let all: Vec<(Uuid, i32, PartitionRegistration)> = self
            .controller
            .image()
            .topics()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|(&p, r)| (t.topic_id, p, r.clone()))
            })
            .collect();
        if all.is_empty() {
            return None;
        }
        Some(all[self.below(all.len() as u64) as usize].clone())
    }

    /// The leader of a random partition shrinks or grows its ISR, as a running leader would,
    /// sometimes with epochs that are out of date.
    fn alter_isr(&mut self) -> Result<Vec<(Uuid, i32)>, String> {
        let Some((topic_id, partition, p)) = self.random_partition() else {
            return Ok(Vec::new());
        };
        let Some(node) = self.nodes.iter().find(|n| n.id == p.leader).cloned() else {
            return Ok(Vec::new());
        };
        let (Some(epoch), true) = (node.epoch, node.running) else {
            return Ok(Vec::new());
        };
        let mut new_isr = p.isr.clone();
        let outside: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|b| !p.isr.contains(b))
            .collect();
        let followers: Vec<i32> = p.isr.iter().copied().filter(|&b| b != p.leader).collect();
        let grow = !outside.is_empty() && (followers.is_empty() || self.chance(50));
        if grow {
            new_isr.push(outside[self.below(outside.len() as u64) as usize]);
        } else if !followers.is_empty() {
            let gone = followers[self.below(followers.len() as u64) as usize];
            new_isr.retain(|&b| b != gone);
        } else {
            return Ok(Vec::new());
        }
        let stale = self.below(10);
        let request = AlterPartition {
            broker_id: node.id,
            broker_epoch: epoch,
            topic_id,
            partition,
            leader_epoch: p.leader_epoch - i32::from(stale == 0),
            partition_epoch: p.partition_epoch - i32::from(stale == 1),
            new_isr: new_isr.clone(),
        };
        let before = self.controller.image().clone();
        match self.controller.alter_partition(request) {
            Ok(_) if stale <= 1 => self.fail("a stale AlterPartition was accepted".into()),
            Ok((_, records)) => {
                self.note(format!(
                    "leader {} sets ISR of {partition} to {new_isr:?}",
                    node.id
                ));
                self.commit(records);
                Ok(if grow {
                    vec![(topic_id, partition)]
                } else {
                    Vec::new()
                })
            }
            Err(e) => {
                let expected = match stale {
                    0 => e.code == codes::FENCED_LEADER_EPOCH,
                    1 => e.code == codes::INVALID_UPDATE_VERSION,
                    _ => e.code == codes::INELIGIBLE_REPLICA && grow,
                };
                if !expected {
                    return self.fail(format!("AlterPartition refused unexpectedly: {e:?}"));
                }
                if self.controller.image() != &before {
                    return self.fail("a refused AlterPartition changed the image".into());
                }
                Ok(Vec::new())
            }
        }
    }

    fn preferred_election(&mut self) -> Check {
        let Some((topic_id, partition, p)) = self.random_partition() else {
            return Ok(());
        };
        match self
            .controller
            .elect_leader(topic_id, partition, ElectionType::Preferred)
        {
            Ok(records) => {
                self.note(format!(
                    "preferred election of {partition}: {}",
                    p.preferred_leader()
                ));
                self.commit(records);
                Ok(())
            }
            Err(e)
                if e.code == codes::ELECTION_NOT_NEEDED
                    || e.code == codes::PREFERRED_LEADER_NOT_AVAILABLE =>
            {
                Ok(())
            }
            Err(e) => self.fail(format!("preferred election refused: {e:?}")),
        }
    }

    /// A reassignment of a random partition to random registered brokers, or its
    /// cancellation.
    fn reassign(&mut self) -> Check {
        let Some((topic_id, partition, p)) = self.random_partition() else {
            return Ok(());
        };
        let target = if p.is_reassigning() && self.chance(30) {
            None
        } else {
            let mut ids: Vec<i32> = self.nodes.iter().map(|n| n.id).collect();
            let size = 1 + self.below(ids.len().min(3) as u64) as usize;
            let mut target = Vec::new();
            while target.len() < size {
                let i = self.below(ids.len() as u64) as usize;
                target.push(ids.swap_remove(i));
            }
            Some(target)
        };
        match self
            .controller
            .alter_reassignment(topic_id, partition, target.clone())
        {
            Ok(records) => {
                self.note(format!("reassignment of {partition} to {target:?}"));
                self.commit(records);
                Ok(())
            }
            Err(e)
                if e.code == codes::INVALID_REPLICA_ASSIGNMENT
                    || e.code == codes::NO_REASSIGNMENT_IN_PROGRESS =>
            {
                Ok(())
            }
            Err(e) => self.fail(format!("reassignment refused: {e:?}")),
        }
    }

    fn stale_heartbeat(&mut self) -> Check {
        let i = self.below(self.nodes.len() as u64) as usize;
        let Some(&old) = self.nodes[i].old_epochs.last() else {
            return Ok(());
        };
        let id = self.nodes[i].id;
        let current = self.controller.image().broker(id).map(|b| b.broker_epoch);
        if current == Some(old) {
            // The restart's registration was lost: the old registration is still the one.
            return Ok(());
        }
        match self.controller.heartbeat(beat(id, old), self.now) {
            Err(e) if e.code == codes::STALE_BROKER_EPOCH || current.is_none() => Ok(()),
            other => self.fail(format!("a replaced process's heartbeat got {other:?}")),
        }
    }

    fn check(&self, before: &MetadataImage, grew_by_request: Vec<(Uuid, i32)>) -> Check {
        let now = &self.committed;
        if self.controller.image() != now {
            return self.fail("the controller's image differs from the replayed log".into());
        }
        if let Err(e) = now.check_leaders() {
            return self.fail(e);
        }
        for topic in now.topics() {
            let Some(old_topic) = before.topic(topic.topic_id) else {
                continue;
            };
            for (&partition, p) in &topic.partitions {
                let Some(old) = old_topic.partitions.get(&partition) else {
                    continue;
                };
                let at = format!("{}-{partition}", topic.name);
                if p.leader_epoch < old.leader_epoch || p.partition_epoch < old.partition_epoch {
                    return self.fail(format!("{at}: an epoch went backwards: {old:?} -> {p:?}"));
                }
                // A leader must come from the ISR; one the leader's own request just added
                // counts (a reassignment completing hands the leadership to a new replica
                // in the same step).
                let asked = grew_by_request.contains(&(topic.topic_id, partition));
                if p.leader != old.leader
                    && p.leader != NO_LEADER
                    && !old.isr.contains(&p.leader)
                    && !old.elr.contains(&p.leader)
                    && !(asked && old.is_reassigning())
                {
                    return self.fail(format!("{at}: unclean election: {old:?} -> {p:?}"));
                }
                let grew: Vec<i32> = p
                    .isr
                    .iter()
                    .copied()
                    .filter(|b| !old.isr.contains(b))
                    .collect();
                // An eligible leader replica elected forms an ISR of its own (KIP-966), which
                // it may keep as the last member once fenced in the same step.
                let elected_eligible =
                    p.isr.len() == 1 && grew == p.isr && old.elr.contains(&grew[0]);
                if !grew.is_empty() && !elected_eligible {
                    if !grew_by_request.contains(&(topic.topic_id, partition)) {
                        return self.fail(format!("{at}: ISR grew unasked: {old:?} -> {p:?}"));
                    }
                    if let Some(b) = grew
                        .iter()
                        .find(|&&b| !before.broker(b).is_some_and(|r| r.is_eligible()))
                    {
                        return self.fail(format!("{at}: ineligible broker {b} joined the ISR"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every broker runs and heartbeats, and no leader is asked to change anything.
    fn settle(mut self) -> Check {
        self.note("quiet period".into());
        for node in &mut self.nodes {
            node.shutting_down = false;
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].running {
                self.start(i)?;
            }
        }
        let end = self.now + 4 * self.config.broker_session_timeout_ms;
        while self.now < end {
            let before = self.committed.clone();
            self.advance_time()?;
            self.check(&before, Vec::new())?;
        }
        for b in self.committed.brokers() {
            if b.fenced {
                return self.fail(format!("broker {} is still fenced", b.broker_id));
            }
        }
        for topic in self.committed.topics() {
            for (partition, p) in &topic.partitions {
                if p.leader == NO_LEADER {
                    return self.fail(format!("{}-{partition} has no leader: {p:?}", topic.name));
                }
            }
        }
        Ok(())
    }
}

#[test]
fn random_schedules_keep_leaders_in_sync_epochs_growing_and_settle() {
    let (seeds, verbose): (Vec<u64>, bool) = match std::env::var("SLUICE_SIM_SEED") {
        Ok(s) => (vec![s.parse().expect("SLUICE_SIM_SEED is a number")], true),
        Err(_) => {
            let n = std::env::var("SLUICE_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
            ((0..n).collect(), false)
        }
    };
    let mut elr_elections = 0;
    let failures: Vec<String> = seeds
        .iter()
        .filter_map(|&seed| match Sim::new(seed, verbose).run() {
            Ok(elected) => {
                elr_elections += elected;
                None
            }
            Err(e) => Some(e),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed (replay one with SLUICE_SIM_SEED=n):\n{}",
        failures.len(),
        seeds.len(),
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{} seeds; {elr_elections} leaders elected from eligible leader replicas",
        seeds.len()
    );
    if seeds.len() >= 100 {
        assert!(
            elr_elections > 0,
            "no seed elected an eligible leader replica"
        );
    }
}

/// Partitions whose leader in `after` was, in `before`, an eligible leader replica.
fn elected_from_elr(before: &MetadataImage, after: &MetadataImage) -> usize {
    after
        .topics()
        .filter_map(|t| Some((t, before.topic(t.topic_id)?)))
        .map(|(t, old)| {
            t.partitions
                .iter()
                .filter(|(i, p)| {
                    old.partitions
                        .get(i)
                        .is_some_and(|o| p.leader != o.leader && o.elr.contains(&p.leader))
                })
                .count()
        })
        .sum()
}
