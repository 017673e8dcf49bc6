//! Three voters in one process over real TCP sockets and real files: the leader is stopped,
//! another takes over, and the old one restarts from its directory and catches up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config};
use sluice_metadata::records::{encode_batch, MetadataRecord, RESOURCE_BROKER};
use sluice_storage::{Fs, Fsync, RealFs};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::network::{serve, TcpNetwork};
use crate::types::{MetadataBatch, NodeId, Raft};
use crate::{open_storage, StateMachine};

struct Voter {
    raft: Raft,
    sm: StateMachine,
    server: JoinHandle<std::io::Result<()>>,
}

async fn start(
    id: NodeId,
    addr: SocketAddr,
    dir: &Path,
    members: &BTreeMap<NodeId, BasicNode>,
) -> Voter {
    let fs: Arc<dyn Fs> = Arc::new(RealFs::new(Arc::new(Fsync)));
    let (log, sm) = open_storage(fs, dir).unwrap();
    let config = Config {
        cluster_name: "tcp".into(),
        election_timeout_min: 300,
        election_timeout_max: 600,
        heartbeat_interval: 100,
        ..Default::default()
    };
    let raft = Raft::new(
        id,
        Arc::new(config.validate().unwrap()),
        TcpNetwork::default(),
        log,
        sm.clone(),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = tokio::spawn(serve(listener, raft.clone(), None));
    if !raft.is_initialized().await.unwrap() {
        let _ = raft.initialize(members.clone()).await;
    }
    Voter { raft, sm, server }
}

async fn leader_of(voters: &BTreeMap<NodeId, Voter>) -> NodeId {
    let any = voters.values().next().unwrap();
    let metrics = any
        .raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| voters.contains_key(&l)),
            "a running leader",
        )
        .await
        .expect("a leader is elected");
    metrics.current_leader.unwrap()
}

/// Writes one batch through whichever voter leads, retrying while an election settles.
async fn write(voters: &BTreeMap<NodeId, Voter>, i: u64) -> u64 {
    let batch = encode_batch(&[MetadataRecord::Config {
        resource_type: RESOURCE_BROKER,
        resource_name: String::new(),
        name: format!("k{i}"),
        value: Some(i.to_string()),
    }]);
    for _ in 0..200 {
        let leader = leader_of(voters).await;
        match voters[&leader]
            .raft
            .client_write(MetadataBatch(batch.to_vec()))
            .await
        {
            Ok(response) => return response.log_id.index,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("write k{i} never committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_over_tcp_fail_over_and_a_restarted_voter_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let mut addrs = BTreeMap::new();
    for id in 1..=3u64 {
        // Take a free port, then let the voter bind it.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.insert(id, probe.local_addr().unwrap());
    }
    let members: BTreeMap<NodeId, BasicNode> = addrs
        .iter()
        .map(|(&id, addr)| (id, BasicNode::new(addr.to_string())))
        .collect();
    let dir =
        |id: NodeId| -> PathBuf { root.path().join(format!("node{id}/__cluster_metadata-0")) };
    let mut voters = BTreeMap::new();
    for (&id, &addr) in &addrs {
        voters.insert(id, start(id, addr, &dir(id), &members).await);
    }
    let first = leader_of(&voters).await;
    for i in 0..10 {
        write(&voters, i).await;
    }
    // Stop the leader: the other two elect one of themselves and go on.
    let stopped = voters.remove(&first).unwrap();
    stopped.raft.shutdown().await.unwrap();
    stopped.server.abort();
    let mut last = 0;
    for i in 10..20 {
        last = write(&voters, i).await;
    }
    // The old leader restarts from its files and catches up.
    voters.insert(
        first,
        start(first, addrs[&first], &dir(first), &members).await,
    );
    for (id, voter) in &voters {
        voter
            .raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(last), "caught up")
            .await
            .unwrap_or_else(|e| panic!("voter {id} did not catch up: {e}"));
    }
    let images: Vec<_> = voters
        .values()
        .map(|v| v.sm.view().read(|i| i.clone()))
        .collect();
    assert!(
        images.iter().all(|i| i == &images[0]),
        "the voters' images differ"
    );
    let configs = images[0].configs(RESOURCE_BROKER, "").unwrap();
    for i in 0..20u64 {
        assert_eq!(
            configs.get(&format!("k{i}")),
            Some(&i.to_string()),
            "write k{i}"
        );
    }
    for voter in voters.into_values() {
        voter.raft.shutdown().await.unwrap();
        voter.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_far_past_the_bound_closes_the_connection_and_allocates_nothing() {
    use openraft::raft::InstallSnapshotRequest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let root = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let members = BTreeMap::from([(1, BasicNode::new(addr.to_string()))]);
    let voter = start(1, addr, &root.path().join("q"), &members).await;
    let chunk = |offset: u64| -> Vec<u8> {
        let chunk: InstallSnapshotRequest<crate::types::QuorumTypes> = InstallSnapshotRequest {
            vote: openraft::Vote::new_committed(9, 2),
            meta: Default::default(),
            offset,
            data: vec![1],
            done: false,
        };
        serde_json::to_vec(&chunk).unwrap()
    };
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A first chunk at offset 0 starts a transfer (openraft refuses a first chunk elsewhere);
    // the next one claims an offset a terabyte in.
    for offset in [0, 1 << 40] {
        let body = chunk(offset);
        stream.write_u32(body.len() as u32 + 1).await.unwrap();
        stream.write_u8(2).await.unwrap();
        stream.write_all(&body).await.unwrap();
        if offset == 0 {
            let len = stream.read_u32().await.unwrap() as usize;
            let mut answer = vec![0; len];
            stream.read_exact(&mut answer).await.unwrap();
        }
    }
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the connection is closed, not left hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "no answer: {read:?}");
    // The voter is unharmed and still commits.
    let mut voters = BTreeMap::new();
    voters.insert(1, voter);
    write(&voters, 0).await;
    for voter in voters.into_values() {
        voter.raft.shutdown().await.unwrap();
        voter.server.abort();
    }
}
