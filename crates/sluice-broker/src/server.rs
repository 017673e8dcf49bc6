//! The accept loop and per-connection request pipeline.
//!
//! A connection reads frames in order and runs each request's state-changing part (an append,
//! a topic creation) before reading the next, so requests take effect in the order sent. What a
//! request then waits for (an fsync, a long poll) is a future the connection's writer task
//! polls alongside the others in flight and answers in request order, so pipelined requests
//! are answered in order while their waits overlap, without a task per request. At most
//! `queued.max.requests.per.connection` wait at once.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use sluice_partition::EveryInterval;

use sluice_partition::FileSlice;
use sluice_records::RecordCounter;

use crate::budget::{Budget, Charge, SMALL_FRAME_BYTES};
use crate::descriptors::{ConnectionSlot, Refused};
use crate::metrics::{Metrics, RequestTiming};
use crate::response::{FetchedRecords, OutChunk, Response, ResponseResult};
use crate::{handlers, millis, BrokerState};

/// A finished response: the answer, when it was ready, and its bytes counted against the
/// connection's and the broker's unsent-response budgets until it is written.
struct Ready {
    result: ResponseResult,
    at: Instant,
    _held: Option<(Charge, Charge)>,
}

/// A request whose response the writer awaits (ready, or still being computed; dropped
/// with the connection, so nothing of a closed connection outlives it), with what its
/// timing needs (when metrics are on): when its frame was read, and how long its handler ran
/// inline.
struct Pending {
    response: Queued,
    api_key: i16,
    timing: Option<(Instant, Duration)>,
    /// One of the connection's `queued.max.requests.per.connection` places, held until the
    /// response is written.
    place: OwnedSemaphorePermit,
}

/// A response: ready when its request was handled, or still being computed.
enum Queued {
    Ready(Ready),
    Later(Pin<Box<dyn Future<Output = Ready> + Send>>),
}

/// A response ready to be written, with what [`Pending`] carried.
struct Resolved {
    ready: Ready,
    api_key: i16,
    timing: Option<(Instant, Duration)>,
    _place: OwnedSemaphorePermit,
}

impl Pending {
    async fn resolve(self) -> Resolved {
        let ready = match self.response {
            Queued::Ready(ready) => ready,
            Queued::Later(future) => future.await,
        };
        Resolved {
            ready,
            api_key: self.api_key,
            timing: self.timing,
            _place: self.place,
        }
    }
}

impl Ready {
    /// Counts `result`'s encoded bytes against the connection's and the broker's
    /// unsent-response budgets until it is written.
    fn charged(result: ResponseResult, budgets: &Budgets) -> Self {
        let held = match &result {
            Ok(Some(answer)) => {
                let n = answer.held_bytes();
                Some((budgets.unsent.charge(n), budgets.unsent_total.charge(n)))
            }
            _ => None,
        };
        Ready {
            result,
            at: Instant::now(),
            _held: held,
        }
    }
}

/// The budgets a connection's reader and writer share.
#[derive(Clone)]
struct Budgets {
    /// Request bytes across the broker.
    requests: Arc<Budget>,
    /// This connection's unsent response bytes.
    unsent: Arc<Budget>,
    /// Unsent response bytes across the broker.
    unsent_total: Arc<Budget>,
}

impl Budgets {
    /// Whether the reader may read another request: this connection's unsent responses are
    /// under its limit, and the broker's are too unless this connection has none waiting (a
    /// client that reads its responses is never held up by one that does not).
    fn may_read(&self) -> bool {
        let own = self.unsent.used();
        own < self.unsent.limit()
            && (own == 0 || self.unsent_total.used() < self.unsent_total.limit())
    }

    async fn wait_to_read(&self) {
        loop {
            // Registered before the check, so a release in between is not missed.
            let own = self.unsent.freed().notified();
            let total = self.unsent_total.freed().notified();
            tokio::pin!(own, total);
            own.as_mut().enable();
            total.as_mut().enable();
            if self.may_read() {
                return;
            }
            tokio::select! {
                _ = own => {}
                _ = total => {}
            }
        }
    }
}

/// The most of a frame's announced size allocated before its bytes arrive: every request of
/// up to this size is read into one buffer, without regrowing it.
const FRAME_RESERVE_BYTES: usize = 64 << 10;

/// Bytes read from a connection's socket at once: small requests (a few KiB at low load) are
/// read several per system call instead of one recv per header and several per body.
const READ_BUFFER_BYTES: usize = 8 << 10;

/// The first pause after `accept` fails for want of descriptors or memory; it doubles while
/// the failures go on, up to [`ACCEPT_BACKOFF_MAX`]. Waiting connections stay in the kernel's
/// accept queue meanwhile.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connections refused or failed on accept are logged at most this often.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long shutdown waits for connection tasks it has aborted (a request stuck in a blocking
/// file-system call cannot be interrupted) before it flushes and returns without them.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// Whether an accept error is the process or the system running short of a resource, which
/// retrying at once cannot fix.
fn accept_needs_backoff(e: &std::io::Error) -> bool {
    sluice_partition::is_out_of_descriptors(e)
        || matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM))
}

pub(crate) async fn serve(listener: TcpListener, state: Arc<BrokerState>) -> Result<(), String> {
    let mut connections = JoinSet::new();
    let mut shutdown = state.shutdown.clone();
    let refused_log = EveryInterval::new(ACCEPT_LOG_INTERVAL);
    let failed_log = EveryInterval::new(ACCEPT_LOG_INTERVAL);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    // Nothing periodic runs here: flushes and checkpoints have their own task, so accepting
    // and shutting down never wait for them.
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    match state.descriptors.admit(state.config.max_connections) {
                        Ok(slot) => {
                            connections.spawn(connection(state.clone(), stream, peer, slot));
                        }
                        Err(refused) => {
                            state.metrics.connection_refused();
                            drop(stream);
                            if let Some(suppressed) = refused_log.due() {
                                match refused {
                                    Refused::MaxConnections => tracing::warn!(%peer,
                                        limit = state.config.max_connections, suppressed,
                                        "closing connection: max.connections reached"),
                                    Refused::Descriptors(room) => tracing::warn!(%peer,
                                        suppressed, "closing connection: {room}"),
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    let pause = accept_needs_backoff(&e);
                    if let Some(suppressed) = failed_log.due() {
                        tracing::warn!(error = %e, suppressed,
                            backoff_ms = if pause { backoff.as_millis() as u64 } else { 0 },
                            "accept failed");
                    }
                    if pause {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.changed() => break,
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
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
        connections.abort_all();
        let drained = tokio::time::timeout(ABORT_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // Stuck in a blocking call; the process exits around it. Anything it was doing
            // was not acknowledged, and recovery tidies what it left.
            tracing::warn!(
                connections = connections.len(),
                "connections still busy in blocking calls; leaving them"
            );
            connections.detach_all();
        }
    }
    let logs = state.replicas.clone();
    tokio::task::spawn_blocking(move || logs.flush_and_checkpoint())
        .await
        .map_err(|e| format!("final flush panicked: {e}"))?
        .map_err(|e| format!("final flush failed: {e}"))?;
    tracing::info!("shutdown complete: logs flushed and checkpointed");
    Ok(())
}

async fn connection(
    state: Arc<BrokerState>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionSlot,
) {
    let _open = state.metrics.connection_opened();
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    // Bounded by the places: a request is read only once one is free.
    let (pending_tx, pending_rx) = mpsc::unbounded_channel::<Pending>();
    let places = Arc::new(Semaphore::new(
        state.config.queued_max_requests_per_connection,
    ));
    let budgets = Budgets {
        requests: state.request_bytes.clone(),
        unsent: Budget::new(state.config.queued_max_response_bytes_per_connection),
        unsent_total: state.response_bytes.clone(),
    };
    let mut writer = WriterTask(tokio::spawn(write_responses(
        writer,
        pending_rx,
        peer,
        state.metrics.clone(),
    )));
    let timed = state.metrics.enabled();
    let mut shutdown = state.shutdown.clone();
    let max = state.config.socket_request_max_bytes;
    loop {
        // Pipelining depth: no new request while this many wait for their responses.
        let place = tokio::select! {
            place = places.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break, // never closed
            },
            _ = shutdown.changed() => break,
        };
        // Back-pressure: no new request while this connection's answers wait for a client
        // that does not read them (checked after the wait for a place, during which answers
        // may have piled up).
        tokio::select! {
            _ = budgets.wait_to_read() => {}
            _ = shutdown.changed() => break,
        }
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
        // The frame's bytes count against queued.max.request.bytes until its response is
        // ready; a large frame waits for room before its body is read.
        let request_bytes = tokio::select! {
            charge = budgets.requests.reserve(size as usize, SMALL_FRAME_BYTES) => charge,
            _ = shutdown.changed() => break,
        };
        // Room for a frame up to FRAME_RESERVE_BYTES at once: a frame that announces that
        // much and stalls costs what one that sent it would (frames up to SMALL_FRAME_BYTES
        // are read whatever queued.max.request.bytes says). Beyond that the buffer grows only
        // as bytes arrive, so a frame that announces a large size and then stalls costs what
        // it sent, not what it announced.
        let mut frame = Vec::with_capacity((size as usize).min(FRAME_RESERVE_BYTES));
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
        let dispatched = handlers::dispatch(&state, Bytes::from(frame), peer);
        let Some(dispatched) = after_steps(dispatched, &mut shutdown).await else {
            break;
        };
        // The frame has been decoded and acted on; what the response still waits for (an
        // fsync, a long poll) must not keep its bytes counted.
        drop(request_bytes);
        match dispatched {
            Ok(Some(response)) => {
                let timing = received.map(|at| (at, at.elapsed()));
                // An answer computed now is counted now, before the next request is read.
                let response = match response {
                    Response::Now(result) => Queued::Ready(Ready::charged(result, &budgets)),
                    Response::First(_) => Queued::Ready(Ready::charged(
                        Err("a step yielded another step".to_string()),
                        &budgets,
                    )),
                    Response::Later(future) => {
                        let budgets = budgets.clone();
                        Queued::Later(Box::pin(
                            async move { Ready::charged(future.await, &budgets) },
                        ))
                    }
                };
                let pending = Pending {
                    response,
                    api_key,
                    timing,
                    place,
                };
                if pending_tx.send(pending).is_err() {
                    break; // the writer failed; the connection is gone
                }
            }
            Ok(None) => {}
            Err(reason) => {
                state.metrics.error(api_key, "INVALID_REQUEST");
                if !reason.is_empty() {
                    tracing::warn!(%peer, "closing connection: {reason}");
                }
                break;
            }
        }
    }
    drop(pending_tx);
    let _ = (&mut writer.0).await;
}

/// Runs the ordered steps a request asked for (see [`Response::First`]) to the response
/// they yield; `None` if the broker stops meanwhile.
async fn after_steps(
    mut dispatched: handlers::Dispatched,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<handlers::Dispatched> {
    loop {
        match dispatched {
            Ok(Some(Response::First(step))) => {
                dispatched = tokio::select! {
                    d = step => d,
                    _ = shutdown.changed() => return None,
                };
            }
            other => return Some(other),
        }
    }
}

/// The connection's writer, aborted if the connection task is (at shutdown), with the
/// responses it still holds.
struct WriterTask(JoinHandle<()>);

impl Drop for WriterTask {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// Record slices up to this size are read into memory and written with the fields around
/// them in one system call; larger ones are streamed from the file.
const INLINE_RECORDS_BYTES: usize = 64 << 10;

/// The most of a file slice read into memory at once while streaming it.
const STREAM_CHUNK_BYTES: usize = 256 << 10;

/// Writes a response: encoded fields from memory, records from their segment files in
/// pieces. Traffic metrics count each piece before it is written.
async fn write_answer(
    writer: &mut OwnedWriteHalf,
    chunks: Vec<OutChunk>,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    for chunk in chunks {
        match chunk {
            OutChunk::Bytes(b) => {
                pending_len += b.len();
                pending.push(b);
            }
            OutChunk::Records {
                records: FetchedRecords::Empty,
                ..
            } => {}
            OutChunk::Records {
                records: FetchedRecords::Converted { bytes, records },
                topic,
            } => {
                if metrics.enabled() {
                    metrics.fetched(&topic, bytes.len(), records);
                }
                pending_len += bytes.len();
                pending.push(bytes);
            }
            OutChunk::Records {
                records: FetchedRecords::File(slice),
                topic,
            } => {
                if slice.len() <= INLINE_RECORDS_BYTES
                    && pending_len + slice.len() <= INLINE_RECORDS_BYTES
                {
                    let bytes = slice.to_vec()?;
                    count_fetched(metrics, &topic, &bytes, &mut RecordCounter::new());
                    pending_len += bytes.len();
                    pending.push(Bytes::from(bytes));
                } else {
                    write_all_vectored(writer, &pending).await?;
                    pending.clear();
                    pending_len = 0;
                    stream_slice(writer, &slice, &topic, metrics).await?;
                }
            }
        }
    }
    write_all_vectored(writer, &pending).await
}

fn count_fetched(metrics: &Metrics, topic: &str, bytes: &[u8], counter: &mut RecordCounter) {
    if metrics.enabled() {
        metrics.fetched(topic, bytes.len(), counter.feed(bytes));
    }
}

/// Sends a file slice as the socket takes it, holding none of it in memory: on Linux with
/// `sendfile(2)` (the kernel copies from the page cache to the socket), elsewhere, or where
/// the kernel refuses it for this file, by [`copy_slice`].
async fn stream_slice(
    writer: &mut OwnedWriteHalf,
    slice: &FileSlice,
    topic: &str,
    metrics: &Metrics,
) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // Counted before the client can see them, from the batch headers, as the records
        // themselves never pass through here.
        if metrics.enabled() {
            metrics.fetched(topic, slice.len(), count_records(slice)?);
        }
        if send_file(writer, slice).await? {
            return Ok(());
        }
    }
    // On Linux the slice was counted above.
    let uncounted = (!cfg!(target_os = "linux")).then_some(metrics);
    copy_slice(writer, slice, topic, uncounted).await
}

/// The records of a slice's batches (control batches not counted), from a read of each
/// batch header only.
#[cfg(target_os = "linux")]
fn count_records(slice: &FileSlice) -> std::io::Result<u64> {
    use sluice_records::{BATCH_HEADER_SIZE, LOG_OVERHEAD};
    let mut records = 0;
    let mut at = 0usize;
    while at < slice.len() {
        let header = slice.read_at(at, (slice.len() - at).min(BATCH_HEADER_SIZE))?;
        records += RecordCounter::new().feed(&header);
        let Some(length) = header.get(8..12) else {
            break;
        };
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        // Stored batches were validated; a damaged length ends the count, as RecordCounter's.
        match usize::try_from(length) {
            Ok(n) if n + LOG_OVERHEAD >= BATCH_HEADER_SIZE => at += n + LOG_OVERHEAD,
            _ => break,
        }
    }
    Ok(records)
}

/// Sends a slice with `sendfile(2)` as the socket becomes writable. Returns `false`, having
/// sent nothing, if the kernel cannot send from this file (EINVAL, ENOSYS), for the caller
/// to copy it instead.
#[cfg(target_os = "linux")]
async fn send_file(writer: &mut OwnedWriteHalf, slice: &FileSlice) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let Some((file_fd, position)) = slice.fd_and_position() else {
        return Ok(false);
    };
    let stream: &TcpStream = writer.as_ref();
    // Both descriptors stay open across every call below: `stream` and `slice` are borrowed
    // for the whole function.
    let socket_fd = stream.as_raw_fd();
    let mut sent = 0usize;
    while sent < slice.len() {
        stream.writable().await?;
        let result = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let mut offset = libc::off_t::try_from(position + sent as u64)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            // SAFETY: both descriptors are open (above); the kernel writes only `offset`.
            let n = unsafe { libc::sendfile(socket_fd, file_fd, &mut offset, slice.len() - sent) };
            usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
        });
        match result {
            // The file ended before the slice did: it was cut under us, which stored
            // segments never are.
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e)
                if sent == 0 && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Sends a file slice through memory as the socket takes it: each piece is read when the
/// socket is ready and whatever the socket does not take is dropped and read again later, so
/// a client that stops reading costs no memory here. With `metrics`, each piece is counted
/// before it is written.
async fn copy_slice(
    writer: &mut OwnedWriteHalf,
    slice: &FileSlice,
    topic: &str,
    metrics: Option<&Metrics>,
) -> std::io::Result<()> {
    let mut sent = 0usize;
    let mut counted = 0usize;
    let mut counter = RecordCounter::new();
    while sent < slice.len() {
        writer.writable().await?;
        let n = (slice.len() - sent).min(STREAM_CHUNK_BYTES);
        let piece = slice.read_at(sent, n)?;
        if let Some(metrics) = metrics.filter(|_| sent + n > counted) {
            count_fetched(metrics, topic, &piece[counted - sent..], &mut counter);
            counted = sent + n;
        }
        match writer.try_write(&piece) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => sent += written,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_responses(
    mut writer: OwnedWriteHalf,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
) {
    // Every response not yet written is polled here, together, and taken in request order;
    // those that finish while an earlier one is being written wait in `done`.
    let mut in_flight = FuturesOrdered::new();
    let mut done: VecDeque<Resolved> = VecDeque::new();
    let mut reading = true;
    loop {
        let next = match done.pop_front() {
            Some(next) => next,
            None => tokio::select! {
                biased;
                Some(next) = in_flight.next(), if !in_flight.is_empty() => next,
                request = pending.recv(), if reading => {
                    match request {
                        Some(request) => in_flight.push_back(request.resolve()),
                        None => reading = false,
                    }
                    continue;
                }
                else => break,
            },
        };
        let Resolved {
            ready,
            api_key,
            timing,
            _place,
        } = next;
        match ready {
            Ready {
                result: Ok(Some(answer)),
                at: ready,
                _held,
            } => {
                // Counted before the client can see the response; only the timings need
                // the write to have finished.
                metrics.error_codes(api_key, answer.errors);
                let sending = Instant::now();
                let write = write_answer(&mut writer, answer.chunks, &metrics);
                tokio::pin!(write);
                // The responses behind this one go on meanwhile (a long poll's wait, a
                // fetch's read), as they would with nothing to write.
                let written = loop {
                    tokio::select! {
                        biased;
                        written = &mut write => break written,
                        Some(next) = in_flight.next(), if !in_flight.is_empty() => {
                            done.push_back(next);
                        }
                        request = pending.recv(), if reading => match request {
                            Some(request) => in_flight.push_back(request.resolve()),
                            None => reading = false,
                        },
                    }
                };
                if let Err(e) = written {
                    if e.kind() != std::io::ErrorKind::BrokenPipe
                        && e.kind() != std::io::ErrorKind::ConnectionReset
                    {
                        tracing::debug!(%peer, error = %e, "closing connection: write failed");
                    }
                    return;
                }
                drop(_held);
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
            Ready {
                result: Ok(None), ..
            } => {}
            Ready {
                result: Err(reason),
                ..
            } => {
                tracing::error!(%peer, "closing connection: {reason}");
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}
