//! The network between voters: openraft's three messages (AppendEntries, InstallSnapshot in
//! chunks, Vote) over TCP on the controller listener, one connection per peer, one request at
//! a time on it.
//!
//! ```text
//! request   u32 length | u8 kind (1 AppendEntries, 2 InstallSnapshot, 3 Vote,
//!                                  4 a request for the node's [`Service`]) | JSON message
//! answer    u32 length | JSON Result<answer, RaftError> (kinds 1-3), the service's bytes (4)
//! ```
//!
//! Kind 4 carries what brokers ask the active controller (registration, heartbeats): the
//! controller listener serves both the quorum and the controller, as Kafka's does.
//!
//! Every length is checked against [`FRAME_BYTES_MAX`] before anything is allocated for it,
//! and where a snapshot chunk would end against [`SNAPSHOT_BYTES_MAX`]; a frame over them,
//! or one that does not parse, closes the connection with one log line. An AppendEntries
//! over the bound is reported to openraft as too large, and it sends fewer entries.

use std::io;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::types::{NodeId, QuorumTypes, Raft, FRAME_BYTES_MAX, SNAPSHOT_BYTES_MAX};

const APPEND_ENTRIES: u8 = 1;
const INSTALL_SNAPSHOT: u8 = 2;
const VOTE: u8 = 3;
const SERVICE: u8 = 4;

/// What a node serves beside the quorum on its controller listener: requests for the
/// controller, in bytes its own crate defines. An answer must fit in a frame.
pub trait Service: Send + Sync + 'static {
    fn call(
        &self,
        request: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + 'static>>;
}

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a quorum frame of {len} bytes, over the bound of {FRAME_BYTES_MAX}"),
        ));
    }
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut TcpStream, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a quorum message over the frame bound",
        ));
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    stream.write_all(&out).await
}

/// Serves the quorum's messages to peers, and `service`'s requests. Never returns: a failed
/// accept (out of descriptors, say) is logged and retried after a pause.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    service: Option<std::sync::Arc<dyn Service>>,
) -> io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "quorum listener could not accept; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let raft = raft.clone();
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &raft, service.as_deref()).await {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::warn!(%peer, error = %e, "quorum connection closed");
                }
            }
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    raft: &Raft,
    service: Option<&dyn Service>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let frame = read_frame(&mut stream).await?;
        let Some((&kind, body)) = frame.split_first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an empty quorum frame",
            ));
        };
        let (answer, stopped) = match kind {
            APPEND_ENTRIES => answer(&raft.append_entries(from_json(body)?).await)?,
            INSTALL_SNAPSHOT => {
                let chunk: InstallSnapshotRequest<QuorumTypes> = from_json(body)?;
                // openraft writes a chunk at its offset in a buffer: bound where it ends
                // before anything is allocated for it.
                let end = chunk.offset.checked_add(chunk.data.len() as u64);
                if end.is_none_or(|end| end > SNAPSHOT_BYTES_MAX as u64) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a snapshot chunk at offset {} past the bound of {SNAPSHOT_BYTES_MAX}",
                            chunk.offset
                        ),
                    ));
                }
                answer(&raft.install_snapshot(chunk).await)?
            }
            VOTE => answer(&raft.vote(from_json(body)?).await)?,
            SERVICE => match service {
                Some(service) => (service.call(body.to_vec()).await, false),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a service request to a node that serves none",
                    ))
                }
            },
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown quorum message kind {kind}"),
                ))
            }
        };
        write_frame(&mut stream, &[&answer]).await?;
        if stopped {
            // This node's Raft has shut down: close, so that the peer reconnects to whatever
            // serves this address next.
            return Ok(());
        }
    }
}

/// The JSON answer, and whether it says that this node's Raft has stopped.
fn answer<T: Serialize, E: Serialize>(
    result: &Result<T, RaftError<NodeId, E>>,
) -> io::Result<(Vec<u8>, bool)> {
    Ok((to_json(result)?, matches!(result, Err(RaftError::Fatal(_)))))
}

fn to_json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends one request to the [`Service`] at `addr` on a connection of its own, and returns
/// its answer; `timeout` bounds the whole exchange.
pub async fn call_service(addr: &str, request: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        write_frame(&mut stream, &[&[SERVICE], request]).await?;
        read_frame(&mut stream).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Makes a connection per peer: to the address this node's own configuration gives it (as
/// Kafka's `controller.quorum.voters` is each node's own setting), else to the address in
/// its membership entry. Whether each peer was reachable at the last exchange is shared by
/// all its connections (openraft makes one per replication stream and election), so a
/// change is logged once.
#[derive(Debug, Clone, Default)]
pub struct TcpNetwork {
    addresses: std::sync::Arc<std::collections::BTreeMap<NodeId, String>>,
    reachable: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<NodeId, bool>>>,
}

impl TcpNetwork {
    /// A network that reaches the peers in `addresses` there, and any other peer at its
    /// membership address.
    pub fn with_addresses(addresses: std::collections::BTreeMap<NodeId, String>) -> Self {
        Self {
            addresses: std::sync::Arc::new(addresses),
            reachable: Default::default(),
        }
    }
}

/// A connection to one peer, opened on first use and again after a failure.
#[derive(Debug)]
pub struct TcpPeer {
    target: NodeId,
    addr: String,
    stream: Option<TcpStream>,
    /// Whether each peer's last exchange succeeded: a change is logged once, not every retry.
    reachable: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<NodeId, bool>>>,
}

impl RaftNetworkFactory<QuorumTypes> for TcpNetwork {
    type Network = TcpPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> TcpPeer {
        TcpPeer {
            target,
            addr: self
                .addresses
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            stream: None,
            reachable: self.reachable.clone(),
        }
    }
}

type RpcError<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl TcpPeer {
    /// Sends one message and waits for its answer. `entries_hint` is how many entries to try
    /// next if the message is over the frame bound (AppendEntries), else 0.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: u8,
        request: &Req,
        entries_hint: u64,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = to_json(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if body.len() + 1 > FRAME_BYTES_MAX {
            if entries_hint == 0 {
                // One entry (or a message) over the bound cannot be split: openraft would
                // retry it at once, forever. Report the peer unreachable (it backs off).
                let e = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a quorum message over the bound",
                );
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            // openraft sends fewer entries when told the payload is too large.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries_hint),
            ));
        }
        let exchange = async {
            if self.stream.is_none() {
                // A host name is resolved at each connection, so a moved peer is found again.
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*self.addr))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                stream.set_nodelay(true)?;
                self.stream = Some(stream);
            }
            let stream = self.stream.as_mut().expect("connected above");
            write_frame(stream, &[&[kind], &body]).await?;
            read_frame(stream).await
        };
        let answer = match tokio::time::timeout(option.hard_ttl(), exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(self.unreachable(e)),
            Err(_) => return Err(self.unreachable(io::Error::from(io::ErrorKind::TimedOut))),
        };
        if self.set_reachable(true) == Some(false) {
            tracing::info!(
                peer = self.target,
                addr = self.addr,
                "quorum peer reachable again"
            );
        }
        let answer: Result<Resp, RaftError<NodeId, E>> = from_json(&answer).map_err(|e| {
            self.stream = None;
            RPCError::Network(NetworkError::new(&e))
        })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl TcpPeer {
    /// Drops the connection after a failed exchange, logging the first failure in a row.
    fn unreachable<E: std::error::Error>(&mut self, e: io::Error) -> RpcError<E> {
        self.stream = None;
        if self.set_reachable(false) != Some(false) {
            tracing::warn!(peer = self.target, addr = self.addr, error = %e,
                "quorum peer unreachable; retrying");
        }
        RPCError::Unreachable(Unreachable::new(&e))
    }

    /// Records whether the peer answered; returns what was recorded before.
    fn set_reachable(&self, now: bool) -> Option<bool> {
        self.reachable
            .lock()
            .expect("reachability lock")
            .insert(self.target, now)
    }
}

impl RaftNetwork<QuorumTypes> for TcpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QuorumTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError<openraft::error::Infallible>> {
        let hint = rpc.entries.len() as u64 / 2;
        self.call(APPEND_ENTRIES, &rpc, hint, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<QuorumTypes>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.call(INSTALL_SNAPSHOT, &rpc, 0, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError<openraft::error::Infallible>> {
        self.call(VOTE, &rpc, 0, &option).await
    }
}
