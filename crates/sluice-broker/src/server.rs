//! The accept loop and per-connection request pipeline.
//!
//! A connection reads frames in order and runs each request's state-changing part (an append,
//! a topic creation) before reading the next, so requests take effect in the order sent. What a
//! request then waits for (an fsync, a long poll) runs as its own task; a writer task awaits
//! those in request order, so pipelined requests are answered in order while their waits
//! overlap. At most `queued.max.requests.per.connection` wait at once.

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::{handlers, millis, BrokerState};

/// A response still being computed: `Ok(None)` for requests that get no response (acks=0),
/// `Err` when the connection must close instead (the string says why).
pub(crate) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Option<Vec<Bytes>>, String>> + Send>>;

pub(crate) async fn serve(listener: TcpListener, state: Arc<BrokerState>) -> Result<(), String> {
    let mut connections = JoinSet::new();
    let mut shutdown = state.shutdown.clone();
    let mut checkpoints = tokio::time::interval(millis(state.config.checkpoint_interval_ms));
    checkpoints.tick().await;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= state.config.max_connections {
                        tracing::warn!(%peer, limit = state.config.max_connections,
                            "closing connection: max.connections reached");
                        continue;
                    }
                    connections.spawn(connection(state.clone(), stream, peer));
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = checkpoints.tick() => {
                let logs = state.logs.clone();
                match tokio::task::spawn_blocking(move || logs.flush_and_checkpoint()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "periodic flush and checkpoint failed"),
                    Err(e) => tracing::error!(error = %e, "periodic flush and checkpoint panicked"),
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: finishing in-flight requests"
    );
    let deadline = millis(state.config.shutdown_timeout_ms);
    if tokio::time::timeout(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time; closing their connections");
        connections.shutdown().await;
    }
    let logs = state.logs.clone();
    tokio::task::spawn_blocking(move || logs.flush_and_checkpoint())
        .await
        .map_err(|e| format!("final flush panicked: {e}"))?
        .map_err(|e| format!("final flush failed: {e}"))?;
    tracing::info!("shutdown complete: logs flushed and checkpointed");
    Ok(())
}

async fn connection(state: Arc<BrokerState>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (pending_tx, pending_rx) = mpsc::channel::<JoinHandle<Result<Option<Vec<Bytes>>, String>>>(
        state.config.queued_max_requests_per_connection,
    );
    let writer = tokio::spawn(write_responses(writer, pending_rx, peer));
    let mut shutdown = state.shutdown.clone();
    let max = state.config.socket_request_max_bytes;
    loop {
        let size = tokio::select! {
            size = reader.read_i32() => match size {
                Ok(size) => size,
                Err(_) => break, // closed by the client
            },
            _ = shutdown.changed() => break,
        };
        if size < 0 || size as usize > max {
            tracing::warn!(%peer, size, limit = max,
                "closing connection: request size outside 0..=socket.request.max.bytes");
            break;
        }
        // Grow the buffer only as bytes arrive, so a frame that announces a large size and
        // then stalls costs what it sent, not what it announced.
        let mut frame = Vec::new();
        match (&mut reader)
            .take(size as u64)
            .read_to_end(&mut frame)
            .await
        {
            Ok(n) if n == size as usize => {}
            _ => {
                tracing::warn!(%peer, size, "closing connection: frame ended early");
                break;
            }
        }
        match handlers::dispatch(&state, Bytes::from(frame), peer) {
            Ok(Some(response)) => {
                if pending_tx.send(tokio::spawn(response)).await.is_err() {
                    break; // the writer failed; the connection is gone
                }
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(%peer, "closing connection: {reason}");
                break;
            }
        }
    }
    drop(pending_tx);
    let _ = writer.await;
}

/// Writes every chunk of a response, in as few system calls as the socket allows.
async fn write_all_vectored(writer: &mut OwnedWriteHalf, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = writer.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

async fn write_responses(
    mut writer: OwnedWriteHalf,
    mut pending: mpsc::Receiver<JoinHandle<Result<Option<Vec<Bytes>>, String>>>,
    peer: SocketAddr,
) {
    while let Some(response) = pending.recv().await {
        match response.await {
            Ok(Ok(Some(chunks))) => {
                if write_all_vectored(&mut writer, &chunks).await.is_err() {
                    return;
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(reason)) => {
                tracing::error!(%peer, "closing connection: {reason}");
                return;
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "request handler failed; closing connection");
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}
