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
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics::{Metrics, RequestTiming};
use crate::{handlers, millis, BrokerState};

/// An encoded response, with the non-zero error codes it carries (for metrics).
pub(crate) struct Answer {
    pub chunks: Vec<Bytes>,
    pub errors: Vec<i16>,
}

/// What a response future yields: `Ok(None)` for requests that get no response (acks=0),
/// `Err` when the connection must close instead (the string says why).
pub(crate) type ResponseResult = Result<Option<Answer>, String>;

/// A response still being computed.
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = ResponseResult> + Send>>;

/// A request whose response the writer awaits, with what its timing needs (when metrics
/// are on): when its frame was read, and how long its handler ran inline.
struct Pending {
    response: JoinHandle<(ResponseResult, Instant)>,
    api_key: i16,
    timing: Option<(Instant, Duration)>,
}

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
                        state.metrics.connection_refused();
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
    let _open = state.metrics.connection_opened();
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (pending_tx, pending_rx) =
        mpsc::channel::<Pending>(state.config.queued_max_requests_per_connection);
    let writer = tokio::spawn(write_responses(
        writer,
        pending_rx,
        peer,
        state.metrics.clone(),
    ));
    let timed = state.metrics.enabled();
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
        let api_key = frame
            .get(..2)
            .map_or(-1, |k| i16::from_be_bytes([k[0], k[1]]));
        let received = timed.then(Instant::now);
        state.metrics.request(api_key);
        match handlers::dispatch(&state, Bytes::from(frame), peer) {
            Ok(Some(response)) => {
                let timing = received.map(|at| (at, at.elapsed()));
                let response = tokio::spawn(async move { (response.await, Instant::now()) });
                let pending = Pending {
                    response,
                    api_key,
                    timing,
                };
                if pending_tx.send(pending).await.is_err() {
                    break; // the writer failed; the connection is gone
                }
            }
            Ok(None) => {}
            Err(reason) => {
                state.metrics.error(api_key, "INVALID_REQUEST");
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
    mut pending: mpsc::Receiver<Pending>,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
) {
    while let Some(Pending {
        response,
        api_key,
        timing,
    }) = pending.recv().await
    {
        match response.await {
            Ok((Ok(Some(answer)), ready)) => {
                // Counted before the client can see the response; only the timings need
                // the write to have finished.
                metrics.error_codes(api_key, answer.errors);
                let sending = Instant::now();
                if write_all_vectored(&mut writer, &answer.chunks)
                    .await
                    .is_err()
                {
                    return;
                }
                if let Some((received, local)) = timing {
                    let remote = ready.saturating_duration_since(received + local);
                    metrics.responded(&RequestTiming {
                        api_key,
                        queue: sending.saturating_duration_since(ready),
                        local,
                        remote,
                        send: sending.elapsed(),
                    });
                }
            }
            Ok((Ok(None), _)) => {}
            Ok((Err(reason), _)) => {
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
