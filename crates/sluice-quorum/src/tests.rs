//! A seeded simulation of a three-voter metadata quorum in one process: an in-memory network
//! that delays, drops (requests and answers) and cuts nodes off, and a simulated disk per node
//! whose power is cut when the node is killed (`SimFs::crash`: what was not synced is lost,
//! wholly or in part) or goes off by itself in the middle of a write or sync, a few calls
//! after a random moment. A killed process's leftover tasks cannot touch the disk again. A client writes metadata batches to whichever node leads, retrying on
//! failure; snapshots are taken every few entries and the log purged behind them, so a node
//! that was down long enough must catch up from a snapshot.
//!
//! Each run checks that, after the faults stop, every node applies the same entries (equal
//! images), and that every write the quorum acknowledged is in that image. Across the seeds it
//! checks that a snapshot was installed on a lagging node, so that the path is exercised.
//!
//! The seed fixes the fault schedule; openraft draws its election timeouts itself, so a
//! replay (`SLUICE_SIM_SEED=n`) follows the same faults but not always the same elections.
//! `SLUICE_SIM_SEEDS=n` runs n seeds (default 12).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, SnapshotPolicy};
use sluice_metadata::records::{encode_batch, MetadataRecord, RESOURCE_BROKER};
use sluice_storage::{Fs, FsDir, FsFile, FsLock, OpenMode, SimFs};

use crate::types::{MetadataBatch, NodeId, QuorumTypes, Raft};
use crate::{open_storage, StateMachine};

const VOTERS: u64 = 3;
const WRITES: u64 = 60;
const QUORUM_DIR: &str = "/data/__cluster_metadata-0";

struct Shared {
    rafts: Mutex<BTreeMap<NodeId, Raft>>,
    cut_off: Mutex<BTreeSet<NodeId>>,
    rng: Mutex<u64>,
}

impl Shared {
    fn random(&self) -> u64 {
        let mut x = self.rng.lock().unwrap();
        // splitmix64
        *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&self, percent: u64) -> bool {
        self.random() % 100 < percent
    }
}

#[derive(Clone)]
struct Router {
    me: NodeId,
    shared: Arc<Shared>,
}

struct Conn {
    from: NodeId,
    to: NodeId,
    shared: Arc<Shared>,
}

fn unreachable(why: &str) -> Unreachable {
    Unreachable::new(&io::Error::other(why.to_owned()))
}

impl Conn {
    /// Delivers a message after a random delay, or loses it.
    async fn reach(&self) -> Result<Raft, Unreachable> {
        let delay = self.shared.random() % 15;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let cut = self.shared.cut_off.lock().unwrap();
        if cut.contains(&self.from) || cut.contains(&self.to) {
            return Err(unreachable("cut off"));
        }
        drop(cut);
        if self.shared.chance(5) {
            return Err(unreachable("request lost"));
        }
        let target = self.shared.rafts.lock().unwrap().get(&self.to).cloned();
        target.ok_or_else(|| unreachable("node down"))
    }

    /// Loses an answer that was produced.
    fn answer_lost(&self) -> bool {
        self.shared.chance(5)
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetwork<QuorumTypes> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QuorumTypes>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let raft = self.reach().await?;
        let answer = raft.append_entries(rpc).await;
        if self.answer_lost() {
            return Err(unreachable("answer lost").into());
        }
        answer.map_err(|e| RemoteError::new(self.to, e).into())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<QuorumTypes>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let raft = self.reach().await?;
        let answer = raft.install_snapshot(rpc).await;
        if self.answer_lost() {
            return Err(unreachable("answer lost").into());
        }
        answer.map_err(|e| RemoteError::new(self.to, e).into())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let raft = self.reach().await?;
        let answer = raft.vote(rpc).await;
        if self.answer_lost() {
            return Err(unreachable("answer lost").into());
        }
        answer.map_err(|e| RemoteError::new(self.to, e).into())
    }
}

impl RaftNetworkFactory<QuorumTypes> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
        Conn {
            from: self.me,
            to: target,
            shared: self.shared.clone(),
        }
    }
}

struct Node {
    disk: SimFs,
    running: Option<(Raft, StateMachine)>,
    /// The running process's door to the disk, shut when it is killed.
    alive: Arc<AtomicBool>,
}

/// The disk as one process sees it: once the process is killed, every call fails, so that
/// tasks openraft leaves behind at shutdown (its state-machine worker, a snapshot being built)
/// cannot write into the next process's files.
#[derive(Debug)]
struct ProcessFs {
    disk: SimFs,
    alive: Arc<AtomicBool>,
}

impl ProcessFs {
    fn check(&self) -> io::Result<()> {
        if self.alive.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(io::Error::other("the process was killed"))
        }
    }
}

impl Fs for ProcessFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        self.check()?;
        self.disk.open(path, mode)
    }
    fn open_dir(&self, path: &Path) -> io::Result<Box<dyn FsDir>> {
        self.check()?;
        self.disk.open_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check()?;
        self.disk.read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.check().is_ok() && self.disk.exists(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.check()?;
        self.disk.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        self.disk.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.disk.remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.disk.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.disk.remove_dir_all(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn FsLock>>> {
        self.check()?;
        self.disk.try_lock(path)
    }
}

struct Sim {
    seed: u64,
    config: Arc<Config>,
    shared: Arc<Shared>,
    nodes: BTreeMap<NodeId, Node>,
    trace: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let config = Config {
            cluster_name: "sim".into(),
            election_timeout_min: 150,
            election_timeout_max: 300,
            heartbeat_interval: 50,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(8),
            max_in_snapshot_log_to_keep: 2,
            purge_batch_size: 1,
            ..Default::default()
        };
        let nodes = (1..=VOTERS)
            .map(|id| {
                let node = Node {
                    disk: SimFs::new(seed * 31 + id),
                    running: None,
                    alive: Arc::new(AtomicBool::new(false)),
                };
                (id, node)
            })
            .collect();
        Self {
            seed,
            config: Arc::new(config.validate().expect("valid raft config")),
            shared: Arc::new(Shared {
                rafts: Mutex::new(BTreeMap::new()),
                cut_off: Mutex::new(BTreeSet::new()),
                rng: Mutex::new(seed),
            }),
            nodes,
            trace: Vec::new(),
        }
    }

    fn note(&mut self, what: String) {
        if std::env::var("SLUICE_SIM_SEED").is_ok() {
            eprintln!("{what}");
        }
        self.trace.push(what);
        if self.trace.len() > 30 {
            self.trace.remove(0);
        }
    }

    fn fail<T>(&self, why: String) -> Result<T, String> {
        Err(format!(
            "seed {}: {why}\nlast steps:\n  {}",
            self.seed,
            self.trace.join("\n  ")
        ))
    }

    async fn start(&mut self, id: NodeId) -> Result<(), String> {
        let alive = Arc::new(AtomicBool::new(true));
        self.nodes.get_mut(&id).unwrap().alive = alive.clone();
        let fs: Arc<dyn Fs> = Arc::new(ProcessFs {
            disk: self.nodes[&id].disk.clone(),
            alive,
        });
        let dir = Path::new(QUORUM_DIR);
        let (log, sm) = open_storage(fs, dir).map_err(|e| format!("node {id}: {e}"))?;
        let router = Router {
            me: id,
            shared: self.shared.clone(),
        };
        let raft = Raft::new(id, self.config.clone(), router, log, sm.clone())
            .await
            .map_err(|e| format!("node {id}: {e}"))?;
        if !raft.is_initialized().await.map_err(|e| e.to_string())? {
            let members: BTreeMap<NodeId, BasicNode> =
                (1..=VOTERS).map(|v| (v, BasicNode::default())).collect();
            // Safe on every voter with the same members; refused once a log exists.
            let _ = raft.initialize(members).await;
        }
        self.shared.rafts.lock().unwrap().insert(id, raft.clone());
        self.nodes.get_mut(&id).unwrap().running = Some((raft, sm));
        self.note(format!("node {id} starts"));
        Ok(())
    }

    async fn kill(&mut self, id: NodeId) {
        self.shared.rafts.lock().unwrap().remove(&id);
        let node = self.nodes.get_mut(&id).unwrap();
        node.alive.store(false, Ordering::Release);
        if let Some((raft, _)) = node.running.take() {
            let _ = raft.shutdown().await;
        }
        node.disk.crash();
        self.note(format!(
            "node {id} killed; its disk loses what was not synced"
        ));
    }

    fn leader(&self) -> Option<Raft> {
        let running: Vec<&Raft> = self
            .nodes
            .values()
            .filter_map(|n| n.running.as_ref().map(|r| &r.0))
            .collect();
        let pick = (self.shared.random() % running.len().max(1) as u64) as usize;
        let candidate = running.get(pick)?;
        let leader = candidate.metrics().borrow().current_leader?;
        self.nodes
            .get(&leader)?
            .running
            .as_ref()
            .map(|r| r.0.clone())
    }

    async fn write(&self, i: u64) -> Option<u64> {
        let leader = self.leader()?;
        let batch = encode_batch(&[MetadataRecord::Config {
            resource_type: RESOURCE_BROKER,
            resource_name: String::new(),
            name: format!("k{i}"),
            value: Some(i.to_string()),
        }]);
        let write = leader.client_write(MetadataBatch(batch.to_vec()));
        match tokio::time::timeout(Duration::from_secs(2), write).await {
            Ok(Ok(response)) => Some(response.log_id.index),
            _ => None,
        }
    }

    async fn faults(&mut self) -> Result<(), String> {
        // A node whose power went off mid-write is down until it restarts.
        for id in 1..=VOTERS {
            if self.nodes[&id].running.is_some() && self.nodes[&id].disk.is_powered_off() {
                self.note(format!("node {id} lost power mid-operation"));
                self.kill(id).await;
            }
        }
        let roll = self.shared.random() % 100;
        let id = 1 + self.shared.random() % VOTERS;
        let running = self.nodes[&id].running.is_some();
        match roll {
            0..=11 if running => self.kill(id).await,
            12..=39 if !running => self.start(id).await?,
            40..=47 => {
                self.shared.cut_off.lock().unwrap().insert(id);
                self.note(format!("node {id} cut off"));
            }
            48..=63 => {
                self.shared.cut_off.lock().unwrap().clear();
                self.note("network healed".into());
            }
            64..=71 if running => {
                // The power goes off at one of this node's next file-system calls: a write
                // or sync is cut in the middle, whatever it is.
                let after = 1 + self.shared.random() % 40;
                self.nodes[&id].disk.set_faults(0, Some(after));
                self.note(format!("node {id}'s power goes off in {after} calls"));
            }
            _ => {}
        }
        Ok(())
    }

    async fn run(mut self) -> Result<u64, String> {
        for id in 1..=VOTERS {
            self.start(id).await?;
        }
        let mut acked = Vec::new();
        for i in 0..WRITES {
            self.faults().await?;
            for _ in 0..3 {
                if self.write(i).await.is_some() {
                    self.note(format!("write k{i} acknowledged"));
                    acked.push(i);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Faults stop: every node runs and the network heals; one more write must succeed.
        self.shared.cut_off.lock().unwrap().clear();
        for id in 1..=VOTERS {
            if self.nodes[&id].disk.is_powered_off() {
                self.kill(id).await;
            }
            self.nodes[&id].disk.set_faults(0, None);
        }
        for id in 1..=VOTERS {
            if self.nodes[&id].running.is_none() {
                self.start(id).await?;
            }
        }
        let mut last = None;
        for _ in 0..100 {
            last = self.write(WRITES).await;
            if last.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(last) = last else {
            return self.fail("no write succeeded after the faults stopped".into());
        };
        for (&id, node) in &self.nodes {
            let (raft, _) = node.running.as_ref().expect("all running");
            let waited = raft
                .wait(Some(Duration::from_secs(60)))
                .applied_index_at_least(Some(last), "caught up")
                .await;
            if waited.is_err() {
                return self.fail(format!("node {id} did not apply up to {last}"));
            }
        }
        let images: Vec<_> = self
            .nodes
            .values()
            .map(|n| {
                n.running
                    .as_ref()
                    .unwrap()
                    .1
                    .view()
                    .read(|image| image.clone())
            })
            .collect();
        if images.iter().any(|image| image != &images[0]) {
            return self.fail("the nodes' images differ".into());
        }
        let configs = images[0]
            .configs(RESOURCE_BROKER, "")
            .cloned()
            .unwrap_or_default();
        for i in &acked {
            if configs.get(&format!("k{i}")) != Some(&i.to_string()) {
                return self.fail(format!("acknowledged write k{i} is lost"));
            }
        }
        let installed: u64 = self
            .nodes
            .values()
            .map(|n| n.running.as_ref().unwrap().1.snapshot_counts().1)
            .sum();
        for id in 1..=VOTERS {
            self.kill(id).await;
        }
        Ok(installed)
    }
}

fn run_seed(seed: u64) -> Result<u64, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(Sim::new(seed).run())
}

#[test]
fn a_quorum_under_kills_and_network_faults_loses_no_acknowledged_write_and_converges() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SLUICE_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SLUICE_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(12);
            (0..n).collect()
        }
    };
    let mut installed = 0;
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run_seed(seed) {
            Ok(n) => installed += n,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    if seeds.len() > 1 {
        assert!(
            installed > 0,
            "no seed made a node catch up from a snapshot"
        );
    }
    eprintln!(
        "{} seeds from {}: {installed} snapshots installed on lagging nodes",
        seeds.len(),
        seeds[0]
    );
}
