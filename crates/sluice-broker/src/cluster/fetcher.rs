//! Followers fetch from their leaders (Kafka's `ReplicaFetcherManager` and
//! `ReplicaFetcherThread`): one task per leader broker fetches every partition this broker
//! follows there, with Kafka's own Fetch request (v12, with this broker's id as the replica
//! id, the leader epoch it knows and the epoch of its last record).
//!
//! What comes back is appended as it is (the leader assigned offsets and epochs), made
//! durable (fsynced; the syncs of every partition of one response asked for together)
//! before the next fetch reports the new log end to the leader, so that a
//! record counts toward the high watermark only once it is on this broker's disk; then the
//! follower takes the leader's high watermark as far as its log reaches, and its log start
//! offset as far as that. A leader that says the follower's log diverges (KIP-320) gets the
//! divergent tail cut before the next fetch; a leader whose log starts past the follower's
//! end (OFFSET_OUT_OF_RANGE) gets the follower's log emptied and started at that log start.
//! Every response is bounded by the allocation guard before it is decoded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_partition::{Partition, ReplicaManager};

use super::peer::{broker_address, PeerConnection};
use crate::BrokerState;

/// The Fetch version followers send.
const FETCH_VERSION: i16 = 12;
/// How long the leader may hold a fetch with nothing new.
const MAX_WAIT_MS: i32 = 500;
/// The most one fetch response may carry, and one partition of it.
const FETCH_MAX_BYTES: i32 = 16 << 20;
const PARTITION_MAX_BYTES: i32 = 4 << 20;
/// How long a fetch may take, connection included, beyond the leader's wait.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pauses after a failed fetch: the first, and the most.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a follower whose every partition waits for the throttle pauses.
const THROTTLED_PAUSE: Duration = Duration::from_millis(100);
/// How often the set of leaders to follow is checked besides metadata changes.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);

/// The partitions this broker follows, by leader.
fn followed(state: &BrokerState) -> BTreeMap<i32, Vec<(String, Arc<Partition>)>> {
    let mut out: BTreeMap<i32, Vec<(String, Arc<Partition>)>> = BTreeMap::new();
    for topic in state.replicas.topics() {
        for p in &topic.partitions {
            if let Some(leader) = p.following() {
                out.entry(leader)
                    .or_default()
                    .push((topic.name.clone(), p.clone()));
            }
        }
    }
    out
}

/// Runs until shutdown: keeps one fetching task per leader this broker follows.
pub(crate) async fn run(state: Arc<BrokerState>) {
    let mut shutdown = state.shutdown.clone();
    let mut changes = state.cluster.published.subscribe();
    let mut tasks: HashMap<i32, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tasks.retain(|_, t| !t.is_finished());
        for leader in followed(&state).into_keys() {
            tasks
                .entry(leader)
                .or_insert_with(|| tokio::spawn(follow(state.clone(), leader)));
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            for (_, t) in tasks {
                t.abort();
            }
            return;
        }
    }
}

/// Fetches from `leader` until this broker follows nothing there, or shutdown.
async fn follow(state: Arc<BrokerState>, leader: i32) {
    let me = state.config.node_id;
    let mut connection: Option<PeerConnection> = None;
    let mut backoff = BACKOFF_MIN;
    let mut failure_logged = false;
    loop {
        if *state.shutdown.borrow() {
            return;
        }
        let partitions = followed(&state).remove(&leader).unwrap_or_default();
        if partitions.is_empty() {
            return;
        }
        let result = match broker_address(&state, leader) {
            None => Err(format!("no address for broker {leader}")),
            Some(addr) => {
                if connection.as_ref().is_some_and(|c| c.addr != addr) {
                    connection = None;
                }
                let conn = match connection.take() {
                    Some(c) => Ok(c),
                    None => {
                        PeerConnection::open(&addr, format!("sluice-replica-fetcher-{me}")).await
                    }
                };
                match conn {
                    Ok(mut conn) => {
                        let outcome = fetch_once(&state, leader, &mut conn, &partitions).await;
                        if outcome.is_ok() {
                            connection = Some(conn);
                        }
                        outcome
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(progress) => {
                if failure_logged {
                    tracing::info!(leader, "replica fetcher: fetching again");
                    failure_logged = false;
                }
                backoff = BACKOFF_MIN;
                if !progress {
                    // Every partition answered with an error: wait for the metadata to move.
                    let mut published = state.cluster.published.subscribe();
                    let _ = tokio::time::timeout(backoff * 4, published.changed()).await;
                }
            }
            Err(e) => {
                if !failure_logged {
                    tracing::warn!(leader, error = e, "replica fetcher: fetch failed; retrying");
                    failure_logged = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// A partition in a fetch: the leader epoch it is fetched in, and whether it is throttled.
type Fetched<'a> = (&'a Arc<Partition>, i32, bool);

/// One fetch of every partition in `partitions` from their leader, and what follows from
/// its answer. Returns whether any partition made progress or could (no error).
async fn fetch_once(
    state: &BrokerState,
    leader: i32,
    conn: &mut PeerConnection,
    partitions: &[(String, Arc<Partition>)],
) -> Result<bool, String> {
    let me = state.config.node_id;
    let meter = &state.throttle.follower;
    // KIP-73: replicas this follower throttles while out of sync are fetched a piece at a
    // time, and not at all while the meter is above follower.replication.throttled.rate.
    let throttled = |name: &str, p: &Partition| {
        meter.limit().is_some()
            && p.throttled_replica(false, me)
            && !state.cluster.view.read(|image| {
                image
                    .topic_by_name(name)
                    .and_then(|t| t.partitions.get(&p.index()))
                    .is_some_and(|r| r.isr.contains(&me))
            })
    };
    // Each partition with the leader epoch it is fetched in: what comes back applies only
    // while this broker still follows `leader` in that epoch.
    let mut by_topic: BTreeMap<&str, Vec<Fetched<'_>>> = BTreeMap::new();
    let waiting = meter.exceeded();
    // A fetch offset tells the leader this broker holds everything below it: only what is
    // durable may be reported. Records not yet durable (a sync that failed without taking
    // the directory offline, or a log recovered after a restart, before its first sync) are
    // synced first; a partition whose sync fails stays out of this fetch.
    let unsynced: Vec<(usize, sluice_partition::FlushWait)> = partitions
        .iter()
        .enumerate()
        .filter(|(_, (_, p))| p.durable_end() < p.log_end_offset())
        .map(|(i, (_, p))| (i, p.flush(p.log_end_offset())))
        .collect();
    let mut held_back = Vec::new();
    for (i, flush) in unsynced {
        if let Err(e) = flush.wait().await {
            let p = &partitions[i].1;
            tracing::warn!(topic = p.topic(), partition = p.index(), error = %e,
                "replica fetcher: records not durable, not reported");
            held_back.push(i);
        }
    }
    for (i, (name, p)) in partitions.iter().enumerate() {
        if held_back.contains(&i) {
            continue;
        }
        let slow = throttled(name, p);
        if slow && waiting {
            continue;
        }
        by_topic
            .entry(name.as_str())
            .or_default()
            .push((p, p.leader_epoch(), slow));
    }
    if by_topic.is_empty() {
        // Everything here waits for the throttle.
        tokio::time::sleep(THROTTLED_PAUSE).await;
        return Ok(true);
    }
    let topics = by_topic
        .iter()
        .map(|(name, parts)| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                .with_partitions(
                    parts
                        .iter()
                        .map(|(p, epoch, slow)| {
                            let max_bytes = if *slow {
                                meter.piece(PARTITION_MAX_BYTES as usize) as i32
                            } else {
                                PARTITION_MAX_BYTES
                            };
                            FetchPartition::default()
                                .with_partition(p.index())
                                .with_current_leader_epoch(*epoch)
                                .with_fetch_offset(p.log_end_offset())
                                .with_last_fetched_epoch(p.latest_epoch().unwrap_or(-1))
                                .with_log_start_offset(p.log_start_offset())
                                .with_partition_max_bytes(max_bytes)
                        })
                        .collect(),
                )
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let wait = Duration::from_millis(MAX_WAIT_MS as u64) + IO_TIMEOUT;
    let called = std::time::Instant::now();
    let response: FetchResponse = conn
        .call(ApiKey::Fetch, FETCH_VERSION, &request, wait)
        .await?;
    let answered = std::time::Instant::now();
    if response.error_code != 0 {
        return Err(format!("the leader answered error {}", response.error_code));
    }
    let mut progress = false;
    let mut appended = Vec::new();
    for topic in response.responses {
        let Some(parts) = by_topic.get(topic.topic.as_str()) else {
            continue;
        };
        for data in topic.partitions {
            let Some((p, epoch, slow)) = parts
                .iter()
                .find(|(p, _, _)| p.index() == data.partition_index)
            else {
                continue;
            };
            if p.following() != Some(leader) || p.leader_epoch() != *epoch {
                continue; // the metadata moved on while the fetch was out
            }
            if *slow {
                meter.record(data.records.as_ref().map_or(0, |r| r.len()));
            }
            match apply(&state.replicas, p, leader, *epoch, data).await {
                Ok(Applied::Done(moved)) => progress |= moved,
                Ok(Applied::Appended(pending)) => appended.push(pending),
                Err(e) => tracing::warn!(
                    topic = topic.topic.as_str(),
                    partition = p.index(),
                    error = e,
                    "replica fetcher"
                ),
            }
        }
    }
    // Every partition's sync was asked for before any is waited for, so that one sync (or
    // a few at once) covers them all, not one after another.
    let syncing = std::time::Instant::now();
    let any_appended = !appended.is_empty();
    for pending in appended {
        let p = pending.partition.clone();
        match pending.finish(&state.replicas, leader).await {
            Ok(()) => progress = true,
            Err(e) => tracing::warn!(
                topic = p.topic(),
                partition = p.index(),
                error = e,
                "replica fetcher"
            ),
        }
    }
    if any_appended {
        state
            .metrics
            .replica_fetched(answered - called, syncing - answered, syncing.elapsed());
    }
    Ok(progress)
}

/// Where applying one partition's answer got to.
enum Applied {
    /// All done; whether it made progress or could have (no error).
    Done(bool),
    /// Records appended, their sync asked for: [`Pending::finish`] completes it.
    Appended(Pending),
}

/// A partition whose fetched records are appended and being synced: the follower takes
/// the leader's high watermark and log start only once they are durable.
struct Pending {
    partition: Arc<Partition>,
    epoch: i32,
    flush: Option<sluice_partition::FlushWait>,
    leader_high_watermark: i64,
    leader_log_start: i64,
}

impl Pending {
    async fn finish(self, replicas: &Arc<ReplicaManager>, leader: i32) -> Result<(), String> {
        let p = self.partition;
        if let Some(flush) = self.flush {
            // Durable here before the next fetch tells the leader we hold it.
            flush.wait().await.map_err(|e| format!("fsync: {e}"))?;
        }
        p.follow_high_watermark(leader, self.epoch, self.leader_high_watermark);
        if self.leader_log_start > p.log_start_offset() {
            let (replicas, partition) = (replicas.clone(), p.clone());
            let leader_start = self.leader_log_start;
            let moved = tokio::task::spawn_blocking(move || {
                replicas.follow_log_start(&partition, leader_start)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot follow the leader's log start {leader_start}: {e}"))?;
            if let Some(start) = moved {
                tracing::debug!(
                    topic = p.topic(),
                    partition = p.index(),
                    start,
                    "the log start follows the leader's"
                );
            }
        }
        Ok(())
    }
}

/// Applies one partition's answer, as far as asking for the sync of what it appended.
async fn apply(
    replicas: &Arc<ReplicaManager>,
    p: &Arc<Partition>,
    leader: i32,
    epoch: i32,
    data: kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<Applied, String> {
    let now = crate::now_ms();
    if data.error_code == ResponseError::OffsetOutOfRange.code()
        && data.log_start_offset > p.log_end_offset()
    {
        // The leader's log starts past this one's end: retention or DeleteRecords removed
        // what this follower would fetch next. Start again where the leader's log starts.
        let (replicas, partition) = (replicas.clone(), p.clone());
        let (start, leader_hw) = (data.log_start_offset, data.high_watermark);
        let done = tokio::task::spawn_blocking(move || {
            replicas.start_follower_log_at(&partition, start, leader_hw, (leader, epoch), now)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start the log again at {start}: {e}"))?;
        if done {
            tracing::info!(
                topic = p.topic(),
                partition = p.index(),
                offset = start,
                "the leader's log starts past this one's end: emptied it to start there"
            );
        }
        return Ok(Applied::Done(true));
    }
    if data.error_code != 0 {
        let known = [
            ResponseError::NotLeaderOrFollower.code(),
            ResponseError::FencedLeaderEpoch.code(),
            ResponseError::UnknownLeaderEpoch.code(),
            ResponseError::UnknownTopicOrPartition.code(),
        ];
        if known.contains(&data.error_code) {
            // The leader and this broker see different metadata: wait for it to move.
            return Ok(Applied::Done(false));
        }
        return Err(format!("the leader answered error {}", data.error_code));
    }
    if data.diverging_epoch.epoch >= 0 {
        let offset =
            p.truncation_offset(data.diverging_epoch.epoch, data.diverging_epoch.end_offset);
        let (replicas, partition) = (replicas.clone(), p.clone());
        let cut = tokio::task::spawn_blocking(move || {
            replicas.truncate_follower_to(&partition, offset, (leader, epoch), now)
        })
        .await
        .map_err(|e| e.to_string())?;
        return match cut {
            Ok(end) => {
                tracing::info!(
                    topic = p.topic(),
                    partition = p.index(),
                    offset = end,
                    "truncated a divergent tail before fetching on"
                );
                Ok(Applied::Done(true))
            }
            Err(e) => Err(format!("cannot truncate to {offset}: {e}")),
        };
    }
    let mut flush = None;
    let records = data.records.filter(|r| !r.is_empty());
    if let Some(records) = records {
        let (replicas, partition) = (replicas.clone(), p.clone());
        let leader_hw = data.high_watermark;
        let appended = tokio::task::spawn_blocking(move || {
            // A response may end in a partial batch; only whole batches are appended.
            let whole = whole_batches(&records);
            if whole == 0 {
                return Ok(None);
            }
            // A log emptied to start at its leader's log start gets the whole batch holding
            // that offset, which begins before it: the log starts again at that batch.
            let base = i64::from_be_bytes(records[..8].try_into().expect("a whole batch"));
            if base < partition.log_end_offset() {
                replicas.start_follower_log_at(
                    &partition,
                    base,
                    leader_hw,
                    (leader, epoch),
                    now,
                )?;
            }
            partition
                .append_as_follower(&records[..whole], leader, epoch, now)
                .map(Some)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        flush = appended.map(|outcome| p.flush(outcome.last_offset + 1));
    }
    Ok(Applied::Appended(Pending {
        partition: p.clone(),
        epoch,
        flush,
        leader_high_watermark: data.high_watermark,
        leader_log_start: data.log_start_offset,
    }))
}

/// The length of the whole batches at the start of `records`.
fn whole_batches(records: &[u8]) -> usize {
    let mut pos = 0usize;
    while records.len() - pos >= 12 {
        let len = i32::from_be_bytes(records[pos + 8..pos + 12].try_into().expect("4 bytes"));
        if len < 0 {
            break;
        }
        let end = pos + 12 + len as usize;
        if end > records.len() {
            break;
        }
        pos = end;
    }
    pos
}

/// How often leaders check their ISRs.
const ISR_CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long one AlterPartition may wait for the controller and this broker's publisher.
const ALTER_PARTITION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until shutdown: every leader partition whose followers fell behind
/// `replica.lag.time.max.ms` (or caught up) asks the controller to change its ISR (Kafka's
/// AlterPartition), all of this broker's changes in one request.
pub(crate) async fn isr_updates(state: Arc<BrokerState>) {
    let mut shutdown = state.shutdown.clone();
    let lag_max = state.config.replica_lag_time_max_ms as i64;
    // Changes the controller did not answer: they may have committed, so they stay pending
    // (the high watermark counts the members they add, KIP-497) and are sent again until
    // answered; one that did commit is then refused as stale, changing nothing.
    let mut unanswered: Vec<(uuid::Uuid, Arc<Partition>, sluice_partition::IsrChange)> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ISR_CHECK_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let Some(broker_epoch) = state.cluster.broker_epoch() else {
            continue;
        };
        let now = crate::now_ms();
        let mut asked = std::mem::take(&mut unanswered);
        for topic in state.replicas.topics() {
            for p in &topic.partitions {
                if let Some(change) = p.isr_change(now, lag_max) {
                    asked.push((topic.id, p.clone(), change));
                }
            }
        }
        if asked.is_empty() {
            continue;
        }
        let changes = asked
            .iter()
            .map(|(id, p, c)| super::rpc::WireIsrChange {
                topic_id: *id,
                partition: p.index(),
                leader_epoch: c.leader_epoch,
                partition_epoch: c.partition_epoch,
                new_isr: c.new_isr.clone(),
            })
            .collect();
        let request = super::rpc::ControllerRequest::AlterPartition {
            broker_id: state.config.node_id,
            broker_epoch,
            changes,
        };
        let outcomes = state
            .cluster
            .topic_request(request, ALTER_PARTITION_TIMEOUT)
            .await;
        for (i, (_, p, change)) in asked.iter().enumerate() {
            match outcomes.as_ref().map(|o| o.get(i).cloned().flatten()) {
                // Committed, and applied by the publisher, which gave the leader the new
                // ISR (and cleared the pending change) before the answer came here.
                Ok(None) => {
                    tracing::info!(topic = p.topic(), partition = p.index(),
                        isr = ?change.new_isr, "ISR changed");
                    state.metrics.isr_changed();
                }
                Ok(Some((code, message))) => {
                    tracing::info!(
                        topic = p.topic(),
                        partition = p.index(),
                        code,
                        message,
                        "the controller refused an ISR change"
                    );
                    p.on_isr_answer(change, None);
                }
                Err(e) => {
                    tracing::warn!(
                        topic = p.topic(),
                        partition = p.index(),
                        error = e,
                        "an ISR change was not answered; asking again"
                    );
                }
            }
        }
        if outcomes.is_err() {
            unanswered = asked;
        }
    }
}
