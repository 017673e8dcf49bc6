//! The transaction coordinator: Kafka's transactions (KIP-98) for every transactional id this
//! broker coordinates, with the epoch fencing of KIP-360.
//!
//! The state of one transactional id moves as in Apache Kafka:
//!
//! ```text
//!           AddPartitions            EndTxn(commit)                 markers written
//!   Empty ───────────────▶ Ongoing ─────────────────▶ PrepareCommit ───────────────▶ CompleteCommit
//!     ▲                     │  ▲                                                          │
//!     │                     │  └──────────────────────── AddPartitions ◀──────────────────┤
//!     │                     │    EndTxn(abort), timeout*,                                 │
//!     │                     └─── InitProducerId* ───────▶ PrepareAbort ─────────────▶ CompleteAbort
//!     │                                                                markers written    │
//!     └──────────────────────── InitProducerId (epoch + 1) ◀──────────────────────────────┘
//!                               * bumps the epoch, fencing the producer that held it
//! ```
//!
//! Every transition is a record for `__transaction_state`. A transition is visible at once,
//! but holds only once the shell reports its record appended: if the append fails, every
//! transition the records carried is rolled back, and until the shell reports, requests for the
//! ids involved get CONCURRENT_TRANSACTIONS (Kafka's pending state). Markers are written by the
//! shell only after the Prepare record is durable, which is why a [`MarkerJob`] becomes
//! available only once its record is reported appended.
//!
//! Every method takes the current time in milliseconds; [`TransactionCoordinator::tick`] aborts
//! transactions past their timeout and expires idle transactional ids. Nothing here reads a
//! clock, a socket or a file.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::codes::*;
use crate::records::{self, BadRecord, TxnValue};

/// Kafka's limit on the length of a topic name: a longer name cannot name a partition.
const TOPIC_NAME_MAX_BYTES: usize = 249;

/// The longest transactional id the record format can hold.
const TRANSACTIONAL_ID_MAX_BYTES: usize = i16::MAX as usize;

/// An epoch at or above this is exhausted (as in Kafka): the next InitProducerId moves to a
/// fresh producer id, so that one more bump (a fence) always fits in an i16.
const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// The topic whose partitions AddOffsetsToTxn adds to a transaction.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The coordinator's limits and timers, under their Kafka broker config names.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`: transactional ids are spread over this many
    /// partitions of `__transaction_state`.
    pub state_partitions: i32,
    /// `transaction.max.timeout.ms`: the longest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id without a transaction in progress is forgotten
    /// after this long without a request.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`
    pub abort_check_interval_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`
    pub expire_check_interval_ms: i64,
    /// `transaction.partitions.max` (Sluice's own): the most partitions one transaction may
    /// span. Kafka bounds it only by the size of the `__transaction_state` record; a
    /// coordinator that keeps and rewrites the set on every change needs a named limit.
    pub transaction_partitions_max: usize,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            state_partitions: 50,
            max_timeout_ms: 900_000,
            id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            abort_check_interval_ms: 10_000,
            expire_check_interval_ms: 3_600_000,
            transaction_partitions_max: 10_000,
        }
    }
}

/// The state of a transactional id, named as Kafka names it on the wire and in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The name ListTransactions and DescribeTransactions report.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The status byte of a `__transaction_state` value.
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnState> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The state a ListTransactions filter names (exactly, as Kafka matches it).
    pub fn from_name(name: &str) -> Option<TxnState> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A record for `__transaction_state`: the caller appends it to `partition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub key: Bytes,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
}

/// Markers the shell must write: one control batch (commit or abort, with this producer id and
/// epoch) per partition, then call [`TransactionCoordinator::markers_written`]. `partitions`
/// is empty when the markers are already durable and only the Complete record is left to write
/// (after an append of that record failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

/// A transactional id as DescribeTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub state: TxnState,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transaction_timeout_ms: i32,
    /// -1 when no transaction has started since the last InitProducerId.
    pub transaction_start_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

/// A transactional id as ListTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TxnMetadata {
    producer_id: i64,
    producer_epoch: i16,
    /// The (producer id, epoch) an InitProducerId may name besides the current one (KIP-360):
    /// the one the producer held before the coordinator bumped it for a timeout, or the one a
    /// producer sent with its last InitProducerId, whose answer may have been lost. Kept in
    /// memory only, as in Kafka.
    last_producer: Option<(i64, i16)>,
    timeout_ms: i32,
    state: TxnState,
    /// topic → partitions of the transaction.
    partitions: BTreeMap<String, BTreeSet<i32>>,
    /// -1 when no transaction has started.
    start_ms: i64,
    last_update_ms: i64,
}

impl TxnMetadata {
    fn new(producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        Self {
            producer_id,
            producer_epoch: 0,
            last_producer: None,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeMap::new(),
            start_ms: -1,
            last_update_ms: now,
        }
    }

    /// `None` for a value that deletes the id. PrepareEpochFence is never written by Kafka (a
    /// fence always goes on to abort), so a record that has it is loaded as the abort.
    fn from_value(v: TxnValue) -> Option<Self> {
        let state = match v.state {
            TxnState::Dead => return None,
            TxnState::PrepareEpochFence => TxnState::PrepareAbort,
            s => s,
        };
        let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for (topic, parts) in v.partitions.into_iter().flatten() {
            partitions.entry(topic).or_default().extend(parts);
        }
        Some(Self {
            producer_id: v.producer_id,
            producer_epoch: v.producer_epoch,
            last_producer: None,
            timeout_ms: v.transaction_timeout_ms,
            state,
            partitions,
            start_ms: v.transaction_start_timestamp_ms,
            last_update_ms: v.last_update_timestamp_ms,
        })
    }

    fn value(&self) -> TxnValue {
        let partitions = (self.state != TxnState::Empty).then(|| {
            self.partitions
                .iter()
                .map(|(topic, parts)| (topic.clone(), parts.iter().copied().collect()))
                .collect()
        });
        TxnValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            transaction_timeout_ms: self.timeout_ms,
            state: self.state,
            partitions,
            last_update_timestamp_ms: self.last_update_ms,
            transaction_start_timestamp_ms: self.start_ms,
        }
    }

    fn contains(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .get(topic)
            .is_some_and(|parts| parts.contains(&partition))
    }

    fn partition_count(&self) -> usize {
        self.partitions.values().map(BTreeSet::len).sum()
    }

    fn partition_list(&self) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .flat_map(|(topic, parts)| parts.iter().map(move |&p| (topic.clone(), p)))
            .collect()
    }

    /// The markers that finish a transaction in PrepareCommit or PrepareAbort.
    fn marker_job(&self, transactional_id: &str) -> MarkerJob {
        MarkerJob {
            transactional_id: transactional_id.to_string(),
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            commit: self.state == TxnState::PrepareCommit,
            partitions: self.partition_list(),
        }
    }
}

/// The epoch that fences the current one. An epoch that cannot grow any more (only a corrupt
/// log holds one: InitProducerId moves to a fresh producer id first) is kept, and the
/// transaction is still aborted.
fn fence_epoch(epoch: i16) -> i16 {
    epoch.saturating_add(1)
}

/// Transitions whose records have not been reported appended yet.
#[derive(Debug, Default)]
struct Pending {
    /// Each changed id as it was before its first change: `None` if it did not exist.
    before: BTreeMap<String, Option<TxnMetadata>>,
    /// Jobs of the Prepare transitions among them, held back until their records are durable.
    jobs: Vec<MarkerJob>,
}

/// How an InitProducerId's expected producer id and epoch relate to the transactional id's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    None,
    Current,
    Last,
}

/// The `__transaction_state` partition of a transactional id: Java's `String.hashCode` of the
/// id, made non-negative as Kafka's `Utils.abs` does, modulo the partition count. Matching
/// Kafka keeps a data directory's layout recognisable to Kafka tooling.
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in transactional_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The coordinator for every transactional id of this broker.
#[derive(Debug)]
pub struct TransactionCoordinator {
    config: TxnConfig,
    txns: BTreeMap<String, TxnMetadata>,
    /// producer id → the transactional id that holds it, for the produce path's checks.
    by_producer_id: BTreeMap<i64, String>,
    records: Vec<Record>,
    /// Transitions whose records have not been taken yet.
    unflushed: Pending,
    /// Transitions whose records were taken but not yet reported appended.
    in_flight: Pending,
    /// Jobs whose Prepare records are durable.
    marker_jobs: Vec<MarkerJob>,
    next_abort_check_ms: i64,
    next_expire_check_ms: i64,
}

impl TransactionCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        Self {
            config,
            txns: BTreeMap::new(),
            by_producer_id: BTreeMap::new(),
            records: Vec::new(),
            unflushed: Pending::default(),
            in_flight: Pending::default(),
            marker_jobs: Vec::new(),
            next_abort_check_ms: i64::MIN,
            next_expire_check_ms: i64::MIN,
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// The `__transaction_state` partition that holds this transactional id.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.config.state_partitions)
    }

    /// Records to append to `__transaction_state`, in the order they were decided. The caller
    /// must append them in this order, then report with
    /// [`TransactionCoordinator::records_appended`] before taking again. Requests for the ids
    /// they concern get CONCURRENT_TRANSACTIONS until then.
    pub fn take_records(&mut self) -> Vec<Record> {
        let unflushed = std::mem::take(&mut self.unflushed);
        for (id, before) in unflushed.before {
            self.in_flight.before.entry(id).or_insert(before);
        }
        self.in_flight.jobs.extend(unflushed.jobs);
        std::mem::take(&mut self.records)
    }

    /// Reports whether the records last taken were appended (and are durable). If not, every
    /// transition they carried is undone: each id returns to what it was before, and the
    /// marker jobs they emitted are dropped. The answers given for those transitions must then
    /// not reach the clients.
    pub fn records_appended(&mut self, appended: bool) {
        let batch = std::mem::take(&mut self.in_flight);
        if appended {
            self.marker_jobs.extend(batch.jobs);
            return;
        }
        for (id, before) in batch.before {
            // Every transition checks for ids in flight first; one that changed again would be
            // restored over a newer change.
            assert!(
                !self.unflushed.before.contains_key(&id),
                "transactional id {id} changed while its records were in flight"
            );
            self.replace(&id, before);
            // Only markers_written moves a transaction out of PrepareX, after its markers are
            // durable: an id restored to PrepareX has lost its Complete record (and whatever
            // followed it in the batch), so just that record is left to write.
            if let Some(m) = self.txns.get(&id) {
                if m.state.is_prepare() {
                    self.marker_jobs.push(MarkerJob {
                        partitions: Vec::new(),
                        ..m.marker_job(&id)
                    });
                }
            }
        }
    }

    /// Markers to write, each for a transaction whose Prepare record is durable.
    pub fn take_marker_jobs(&mut self) -> Vec<MarkerJob> {
        std::mem::take(&mut self.marker_jobs)
    }

    /// InitProducerId for a transactional id (the shell answers requests without one itself).
    /// `allocate` hands out a fresh producer id from the shell's durable allocator, or an
    /// error code. `expected` is the producer id and epoch a KIP-360 producer (InitProducerId
    /// v3+) sends to keep its producer id.
    ///
    /// A new id gets a fresh producer id at epoch 0; an idle one (Empty, CompleteCommit,
    /// CompleteAbort) the next epoch, or a fresh producer id once the epoch is exhausted. An
    /// id with a transaction in progress fences it: the epoch is bumped, the transaction
    /// aborted, and the answer is CONCURRENT_TRANSACTIONS, so that the producer retries and
    /// gets a further epoch once the abort is complete.
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now: i64,
        allocate: &mut dyn FnMut() -> Result<i64, i16>,
    ) -> Result<(i64, i16), i16> {
        if transactional_id.is_empty() || transactional_id.len() > TRANSACTIONAL_ID_MAX_BYTES {
            return Err(INVALID_REQUEST);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(INVALID_TRANSACTION_TIMEOUT);
        }
        // Before the lookup: an id whose expiry is in flight is absent, but not yet gone.
        if self.in_flight.before.contains_key(transactional_id) {
            return Err(CONCURRENT_TRANSACTIONS);
        }
        let Some(current) = self.txns.get(transactional_id) else {
            // As Kafka: an expected producer id means nothing for an id we do not know.
            let producer_id = self.allocate(allocate)?;
            let m = TxnMetadata::new(producer_id, timeout_ms, now);
            self.apply(transactional_id, Some(m));
            return Ok((producer_id, 0));
        };
        let claim = match expected {
            None => Claim::None,
            Some(e) if e == (current.producer_id, current.producer_epoch) => Claim::Current,
            Some(e) if Some(e) == current.last_producer => Claim::Last,
            Some(_) => return Err(PRODUCER_FENCED),
        };
        let mut m = current.clone();
        match m.state {
            TxnState::Ongoing => {
                m.producer_epoch = fence_epoch(m.producer_epoch);
                m.last_producer = expected;
                m.state = TxnState::PrepareAbort;
                m.last_update_ms = now;
                self.prepare(transactional_id, m);
                Err(CONCURRENT_TRANSACTIONS)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let exhausted = m.producer_epoch >= EPOCH_EXHAUSTED;
                if claim == Claim::Last && !exhausted {
                    // A retry of a bump whose answer was lost, or the producer the coordinator
                    // fenced for a timeout: it gets the current epoch, which nobody else holds.
                } else if exhausted {
                    m.producer_id = self.allocate(allocate)?;
                    m.producer_epoch = 0;
                    m.last_producer = expected;
                } else {
                    m.producer_epoch += 1;
                    m.last_producer = expected;
                }
                m.state = TxnState::Empty;
                m.partitions.clear();
                m.timeout_ms = timeout_ms;
                m.start_ms = -1;
                m.last_update_ms = now;
                let answer = (m.producer_id, m.producer_epoch);
                self.apply(transactional_id, Some(m));
                Ok(answer)
            }
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::PrepareEpochFence
            | TxnState::Dead => Err(CONCURRENT_TRANSACTIONS),
        }
    }

    /// AddPartitionsToTxn: starts the transaction (Ongoing) or extends it. One error for the
    /// whole request; the shell spreads it over the partitions.
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now: i64,
    ) -> Result<(), i16> {
        if partitions
            .iter()
            .any(|(t, p)| t.is_empty() || t.len() > TOPIC_NAME_MAX_BYTES || *p < 0)
        {
            return Err(INVALID_REQUEST);
        }
        let current = self.check_producer(transactional_id, producer_id, epoch)?;
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(CONCURRENT_TRANSACTIONS)
            }
            TxnState::Dead => return Err(INVALID_TXN_STATE),
            TxnState::Ongoing if partitions.iter().all(|(t, p)| current.contains(t, *p)) => {
                return Ok(())
            }
            // Nothing to add, and no transaction may be Ongoing without partitions.
            _ if partitions.is_empty() => return Ok(()),
            _ => {}
        }
        let mut m = current.clone();
        if m.state != TxnState::Ongoing {
            m.state = TxnState::Ongoing;
            m.start_ms = now;
            m.partitions.clear();
        }
        for (topic, p) in partitions {
            m.partitions.entry(topic.clone()).or_default().insert(*p);
        }
        if m.partition_count() > self.config.transaction_partitions_max {
            return Err(INVALID_REQUEST);
        }
        m.last_update_ms = now;
        self.apply(transactional_id, Some(m));
        Ok(())
    }

    /// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the transaction.
    pub fn add_offsets(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        offsets_partition: i32,
        now: i64,
    ) -> Result<(), i16> {
        let partition = [(CONSUMER_OFFSETS_TOPIC.to_string(), offsets_partition)];
        self.add_partitions(transactional_id, producer_id, epoch, &partition, now)
    }

    /// EndTxn: an Ongoing transaction moves to PrepareCommit or PrepareAbort, and its markers
    /// become a [`MarkerJob`] once that record is appended. Repeating the end of a completed
    /// transaction succeeds; repeating it while the markers are written is
    /// CONCURRENT_TRANSACTIONS.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<(), i16> {
        let current = self.check_producer(transactional_id, producer_id, epoch)?;
        match (current.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut m = current.clone();
                m.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                m.last_update_ms = now;
                self.prepare(transactional_id, m);
                Ok(())
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit, true)
            | (TxnState::PrepareAbort, false)
            | (TxnState::PrepareEpochFence, _) => Err(CONCURRENT_TRANSACTIONS),
            _ => Err(INVALID_TXN_STATE),
        }
    }

    /// Reports that every marker of a job is written and durable: the transaction completes
    /// (CompleteCommit or CompleteAbort, partitions cleared). Ignored if the transaction has
    /// moved on since.
    pub fn markers_written(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        now: i64,
    ) {
        if self.in_flight.before.contains_key(transactional_id) {
            return;
        }
        let Some(current) = self.txns.get(transactional_id) else {
            return;
        };
        if current.producer_id != producer_id || current.producer_epoch != epoch {
            return;
        }
        let state = match current.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return,
        };
        let mut m = current.clone();
        m.state = state;
        m.partitions.clear();
        m.last_update_ms = now;
        self.apply(transactional_id, Some(m));
    }

    /// Whether a transactional batch of producer (`producer_id`, `epoch`) may go to this
    /// partition: only if the partition was added to the producer's Ongoing transaction, as far
    /// as the appended records say (KIP-890's verification). INVALID_PRODUCER_EPOCH for an
    /// epoch that is not the transaction's, INVALID_TXN_STATE otherwise.
    pub fn verify_partition(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), i16> {
        let durable = self
            .by_producer_id
            .get(&producer_id)
            .and_then(|id| self.durable(id))
            .filter(|m| m.producer_id == producer_id);
        let Some(m) = durable else {
            return Err(INVALID_TXN_STATE);
        };
        if m.producer_epoch != epoch {
            return Err(INVALID_PRODUCER_EPOCH);
        }
        if m.state != TxnState::Ongoing || !m.contains(topic, partition) {
            return Err(INVALID_TXN_STATE);
        }
        Ok(())
    }

    /// Aborts Ongoing transactions past their timeout, bumping the epoch as Kafka does so that
    /// the hung producer is fenced, and forgets ids idle for longer than
    /// `transactional.id.expiration.ms`. Each check runs at most once per its interval.
    pub fn tick(&mut self, now: i64) {
        if now >= self.next_abort_check_ms {
            self.next_abort_check_ms = now.saturating_add(self.config.abort_check_interval_ms);
            self.abort_timed_out(now);
        }
        if now >= self.next_expire_check_ms {
            self.next_expire_check_ms = now.saturating_add(self.config.expire_check_interval_ms);
            self.expire_idle(now);
        }
    }

    fn abort_timed_out(&mut self, now: i64) {
        let timed_out: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                m.state == TxnState::Ongoing
                    && m.start_ms.saturating_add(i64::from(m.timeout_ms)) < now
                    && !self.in_flight.before.contains_key(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in timed_out {
            let mut m = self.txns[&id].clone();
            m.last_producer = Some((m.producer_id, m.producer_epoch));
            m.producer_epoch = fence_epoch(m.producer_epoch);
            m.state = TxnState::PrepareAbort;
            m.last_update_ms = now;
            self.prepare(&id, m);
        }
    }

    fn expire_idle(&mut self, now: i64) {
        let expiration_ms = self.config.id_expiration_ms;
        let expired: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && m.last_update_ms.saturating_add(expiration_ms) < now
                    && !self.in_flight.before.contains_key(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.apply(&id, None);
        }
    }

    /// Applies one `__transaction_state` record during loading. Later records override
    /// earlier ones with the same key, exactly as compaction would leave them.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), BadRecord> {
        let transactional_id = records::decode_key(key)?;
        let loaded = match value {
            Some(v) => TxnMetadata::from_value(records::decode_value(v)?),
            None => None,
        };
        self.replace(&transactional_id, loaded);
        Ok(())
    }

    /// Ends loading: transactions that were writing their markers get their [`MarkerJob`]s
    /// again. Ongoing ones keep their stored start time, so they time out as they would have
    /// (which is why `now` is not needed: every timer counts from a stored timestamp).
    pub fn finish_loading(&mut self, _now: i64) {
        for (id, m) in &self.txns {
            if m.state.is_prepare() {
                self.marker_jobs.push(m.marker_job(id));
            }
        }
    }

    /// A transactional id as DescribeTransactions shows it; `None` if unknown
    /// (TRANSACTIONAL_ID_NOT_FOUND).
    pub fn describe(&self, transactional_id: &str) -> Option<TxnDescription> {
        let m = self.txns.get(transactional_id)?;
        Some(TxnDescription {
            transactional_id: transactional_id.to_string(),
            state: m.state,
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            transaction_timeout_ms: m.timeout_ms,
            transaction_start_ms: m.start_ms,
            partitions: m.partition_list(),
        })
    }

    /// ListTransactions, in transactional id order: ids whose state is named in
    /// `state_filters` (all if empty; names match exactly, as in Kafka), whose producer id is
    /// in `producer_id_filters` (all if empty), and, unless `min_duration_ms` is negative, whose
    /// transaction started more than `min_duration_ms` before `now` (KIP-994).
    pub fn list(
        &self,
        state_filters: &[String],
        producer_id_filters: &[i64],
        min_duration_ms: i64,
        now: i64,
    ) -> Vec<TxnListing> {
        let candidates: Vec<(&String, &TxnMetadata)> = if producer_id_filters.is_empty() {
            self.txns.iter().collect()
        } else {
            let ids: BTreeSet<&String> = producer_id_filters
                .iter()
                .filter_map(|pid| self.by_producer_id.get(pid))
                .collect();
            ids.into_iter()
                .filter_map(|id| self.txns.get_key_value(id))
                .collect()
        };
        candidates
            .into_iter()
            .filter(|(_, m)| {
                state_filters.is_empty() || state_filters.iter().any(|s| s == m.state.name())
            })
            .filter(|(_, m)| {
                // An id with no transaction started has no duration to compare.
                min_duration_ms < 0
                    || (m.start_ms >= 0 && now.saturating_sub(m.start_ms) > min_duration_ms)
            })
            .map(|(id, m)| TxnListing {
                transactional_id: id.clone(),
                producer_id: m.producer_id,
                state: m.state,
            })
            .collect()
    }

    /// How many transactional ids the coordinator holds.
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// The checks every request of a producer goes through, in Kafka's order.
    fn check_producer(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<&TxnMetadata, i16> {
        let m = self
            .txns
            .get(transactional_id)
            .ok_or(INVALID_PRODUCER_ID_MAPPING)?;
        if m.producer_id != producer_id {
            return Err(INVALID_PRODUCER_ID_MAPPING);
        }
        // Older is a fenced producer; newer was never handed out.
        if m.producer_epoch != epoch {
            return Err(PRODUCER_FENCED);
        }
        if self.in_flight.before.contains_key(transactional_id) {
            return Err(CONCURRENT_TRANSACTIONS);
        }
        Ok(m)
    }

    /// A producer id from the shell's allocator; one that is already in use would give two
    /// transactional ids the same producer, so it is refused.
    fn allocate(&self, allocate: &mut dyn FnMut() -> Result<i64, i16>) -> Result<i64, i16> {
        let producer_id = allocate()?;
        if producer_id < 0 || self.by_producer_id.contains_key(&producer_id) {
            return Err(UNKNOWN_SERVER_ERROR);
        }
        Ok(producer_id)
    }

    /// The id as the appended records leave it, ignoring transitions not yet durable.
    fn durable(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        let before = self
            .in_flight
            .before
            .get(transactional_id)
            .or_else(|| self.unflushed.before.get(transactional_id));
        match before {
            Some(before) => before.as_ref(),
            None => self.txns.get(transactional_id),
        }
    }

    /// A transition to PrepareCommit or PrepareAbort: its record, and its markers to write
    /// once the record is durable.
    fn prepare(&mut self, transactional_id: &str, m: TxnMetadata) {
        assert!(m.state.is_prepare(), "{m:?} is not a Prepare state");
        let job = m.marker_job(transactional_id);
        self.apply(transactional_id, Some(m));
        self.unflushed.jobs.push(job);
    }

    /// A transition (`None` deletes the id): applied now, remembered for rollback, and
    /// recorded.
    fn apply(&mut self, transactional_id: &str, new: Option<TxnMetadata>) {
        let value = new.as_ref().map(|m| records::txn_value(&m.value()));
        let old = self.replace(transactional_id, new);
        self.unflushed
            .before
            .entry(transactional_id.to_string())
            .or_insert(old);
        self.records.push(Record {
            partition: self.partition_for(transactional_id),
            key: records::txn_key(transactional_id),
            value,
        });
    }

    /// Puts `new` in place of the id's metadata, keeping the producer id index in step, and
    /// returns what was there.
    fn replace(&mut self, transactional_id: &str, new: Option<TxnMetadata>) -> Option<TxnMetadata> {
        let old = match new {
            Some(m) => self.txns.insert(transactional_id.to_string(), m),
            None => self.txns.remove(transactional_id),
        };
        if let Some(old) = &old {
            if self
                .by_producer_id
                .get(&old.producer_id)
                .is_some_and(|holder| holder == transactional_id)
            {
                self.by_producer_id.remove(&old.producer_id);
            }
        }
        if let Some(m) = self.txns.get(transactional_id) {
            self.by_producer_id
                .insert(m.producer_id, transactional_id.to_string());
        }
        old
    }
}

#[cfg(test)]
mod tests;
