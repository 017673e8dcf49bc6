//! The group coordinator: Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) and committed offsets, for every group this broker coordinates.
//!
//! The state of one group moves as in Apache Kafka:
//!
//! ```text
//!            first join                 all members joined,            leader's SyncGroup
//!   Empty ──────────────▶ Preparing ─── or rebalance timeout ──▶ Completing ─────────▶ Stable
//!     ▲                   Rebalance ◀─────────────────────────── Rebalance ◀──────────────┘
//!     └── nobody rejoined ────┘        join, leave, expiry        join, leave, expiry
//! ```
//!
//! Every method takes the current time in milliseconds; [`GroupCoordinator::tick`] expires
//! sessions and completes rebalances whose timers have run out. Nothing here reads a clock,
//! a socket or a file.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::codes::*;
use crate::records::{self, GroupValue, MemberValue, OffsetValue, RecordKey};
use crate::subscription::subscribed_topics;

/// The longest string a `__consumer_offsets` record can hold (an i16 length).
const RECORD_STRING_MAX_BYTES: usize = i16::MAX as usize;

/// Kafka's longest topic name: a longer one cannot exist, so no offset is kept for it.
const TOPIC_NAME_MAX_BYTES: usize = 249;

fn valid_group_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= RECORD_STRING_MAX_BYTES
}

/// What keeping one protocol of one member costs besides its name and metadata.
const PROTOCOL_OVERHEAD_BYTES: usize = 64;

/// Member ids are `<client id or instance id>-<uuid>`; the prefix is cut to this many bytes so
/// that ids stay far below the i16 string length of the records that store them.
const MEMBER_ID_PREFIX_MAX_BYTES: usize = 255;

/// Identifies a request the coordinator will answer later, through an [`Output`].
pub type WaiterId = u64;

/// The coordinator's limits and timers, under their Kafka broker config names.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// `offsets.topic.num.partitions`: groups are spread over this many partitions.
    pub offsets_topic_partitions: i32,
    /// `group.min.session.timeout.ms`
    pub session_timeout_min_ms: i32,
    /// `group.max.session.timeout.ms`
    pub session_timeout_max_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub group_max_size: usize,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: i64,
    /// `group.member.metadata.max.bytes` (Sluice's own): the most protocol metadata one member
    /// may send in a JoinGroup, summed over its protocols. Kafka bounds it only by the request
    /// size; a coordinator that keeps it for every member needs a tighter limit.
    pub member_metadata_max_bytes: usize,
    /// `group.member.protocols.max` (Sluice's own): the most protocols one member may offer.
    /// Protocol negotiation compares every member's list, so the list must be short.
    pub member_protocols_max: usize,
    /// Seeds member id generation, so that tests replay exactly.
    pub seed: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            offsets_topic_partitions: 50,
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            group_max_size: i32::MAX as usize,
            offset_metadata_max_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            member_metadata_max_bytes: 1 << 20,
            member_protocols_max: 32,
            seed: 0,
        }
    }
}

/// The state of a group, named as Kafka names it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A record for `__consumer_offsets`: the caller appends it to `partition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub key: Bytes,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    /// For a transactional offset commit: the producer id and epoch whose transaction the
    /// record belongs to. The caller writes it in a transactional batch of that producer.
    pub producer: Option<(i64, i16)>,
}

/// A response to a request that had to wait.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Join(WaiterId, JoinResponse),
    Sync(WaiterId, SyncResponse),
}

#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member that does not have an id yet.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// `(name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new dynamic member is first given an id and asked to rejoin with it.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader rejoining a stable group may be told to skip assignment.
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResponse {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// Filled for the leader only.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    fn error(error: i16, member_id: &str) -> Self {
        Self {
            error,
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: i32,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+: must match the group's if given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, `(member id, assignment)`; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: i16) -> Self {
        Self {
            error,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A TxnOffsetCommit.
#[derive(Debug, Clone, Default)]
pub struct TxnCommitRequest {
    pub group_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 (and an empty member id) from a producer outside the group protocol.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<CommitOffset>,
}

#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    pub group_id: String,
    /// -1 for a commit from outside the group protocol (a standalone consumer, a tool).
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// OffsetCommit v2-v4: -1 for the broker's retention.
    pub retention_time_ms: i64,
    pub offsets: Vec<CommitOffset>,
}

/// A committed offset as OffsetFetch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<WaiterId>,
    sync_waiter: Option<WaiterId>,
    supports_skip_assignment: bool,
    /// The session expires at this time unless a heartbeat (or any request) moves it.
    heartbeat_deadline_ms: i64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn touch(&mut self, now: i64) {
        self.heartbeat_deadline_ms = now + i64::from(self.session_timeout_ms);
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

/// The first rebalance of an empty group waits `group.initial.rebalance.delay.ms` for more
/// members, extending while members keep arriving, up to the rebalance timeout.
#[derive(Debug, Clone)]
struct InitialDelay {
    remaining_ms: i64,
    new_member_joined: bool,
}

#[derive(Debug, Clone)]
struct Group {
    group_id: String,
    state: GroupState,
    /// When the group last changed state; offsets of an empty group expire relative to it.
    state_timestamp_ms: Option<i64>,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id of the static member holding it.
    static_members: BTreeMap<String, String>,
    /// Members told MEMBER_ID_REQUIRED that have not rejoined yet, with their deadline.
    pending_members: BTreeMap<String, i64>,
    rebalance_deadline_ms: i64,
    initial_delay: Option<InitialDelay>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
}

impl Group {
    fn new(group_id: &str, now: i64) -> Self {
        Self {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: Some(now),
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay: None,
            offsets: BTreeMap::new(),
        }
    }

    fn transition(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_timestamp_ms = Some(now);
    }

    /// Whether a member with this protocol type and these protocols may join.
    fn supports_protocols(&self, protocol_type: &str, names: &[&str]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !names.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && names.iter().any(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    fn has_all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Each member votes for its most preferred protocol among those every member supports;
    /// the most votes wins, ties going to the earlier protocol in the leader's list.
    fn select_protocol(&self) -> Option<String> {
        let leader = self
            .leader_id
            .as_ref()
            .and_then(|id| self.members.get(id))?;
        let candidates: Vec<&str> = leader
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect();
        let votes = |c: &str| {
            self.members
                .values()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .find(|n| candidates.contains(n))
                        == Some(c)
                })
                .count()
        };
        let mut best: Option<(&str, usize)> = None;
        for c in &candidates {
            let v = votes(c);
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((c, v));
            }
        }
        best.map(|(c, _)| c.to_string())
    }

    /// The current generation's join result for one member: the leader sees every member.
    fn join_result(&self, member_id: &str, with_members: bool) -> JoinResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = if with_members {
            self.members
                .values()
                .map(|m| JoinMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members,
        }
    }

    /// FENCED_INSTANCE_ID if the instance id is held by another member id, UNKNOWN_MEMBER_ID
    /// if the member is not in the group.
    fn check_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), i16> {
        if let Some(instance) = instance {
            if let Some(holder) = self.static_members.get(instance) {
                if holder != member_id {
                    return Err(FENCED_INSTANCE_ID);
                }
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(UNKNOWN_MEMBER_ID)
        }
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    /// Topics the group's members subscribe to, if it speaks the consumer protocol and every
    /// subscription parses.
    fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") || self.members.is_empty() {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            topics.extend(subscribed_topics(&m.metadata(&protocol))?);
        }
        Some(topics)
    }
}

/// Side effects the coordinator produces while handling a call.
#[derive(Debug)]
struct Effects {
    config: CoordinatorConfig,
    outputs: Vec<Output>,
    records: Vec<Record>,
    /// Offsets committed by this call, applied once their records are appended (or, for a
    /// transactional commit, the producer id: held until its transaction ends).
    pending_offsets: Vec<(String, String, i32, OffsetValue, Option<i64>)>,
    rng: u64,
}

impl Effects {
    /// A fresh member id, `prefix-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` as Kafka's look.
    fn member_id(&mut self, prefix: &str) -> String {
        let mut cut = prefix.len().min(MEMBER_ID_PREFIX_MAX_BYTES);
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        let prefix = &prefix[..cut];
        let a = splitmix64(&mut self.rng);
        let b = splitmix64(&mut self.rng);
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    fn reply_join(&mut self, waiter: Option<WaiterId>, response: JoinResponse) {
        if let Some(w) = waiter {
            self.outputs.push(Output::Join(w, response));
        }
    }

    fn reply_sync(&mut self, waiter: Option<WaiterId>, response: SyncResponse) {
        if let Some(w) = waiter {
            self.outputs.push(Output::Sync(w, response));
        }
    }

    fn partition_for(&self, group: &str) -> i32 {
        partition_for(group, self.config.offsets_topic_partitions)
    }

    /// Emits the records of an offset commit (in `producer`'s transaction, if given) and
    /// holds the offsets until they are appended. One error code per offset.
    fn commit(
        &mut self,
        group_id: &str,
        offsets: Vec<CommitOffset>,
        now: i64,
        expire_timestamp_ms: Option<i64>,
        producer: Option<(i64, i16)>,
    ) -> Vec<i16> {
        let partition = self.partition_for(group_id);
        let max_metadata = self.config.offset_metadata_max_bytes;
        let mut errors = Vec::with_capacity(offsets.len());
        for o in offsets {
            if o.topic.len() > TOPIC_NAME_MAX_BYTES {
                errors.push(UNKNOWN_TOPIC_OR_PARTITION);
                continue;
            }
            let metadata = o.metadata.unwrap_or_default();
            if metadata.len() > max_metadata.min(RECORD_STRING_MAX_BYTES) {
                errors.push(OFFSET_METADATA_TOO_LARGE);
                continue;
            }
            let value = OffsetValue {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata,
                commit_timestamp_ms: now,
                expire_timestamp_ms,
            };
            self.records.push(Record {
                partition,
                key: records::offset_key(group_id, &o.topic, o.partition),
                value: Some(records::offset_value(&value)),
                producer,
            });
            self.pending_offsets.push((
                group_id.to_string(),
                o.topic,
                o.partition,
                value,
                producer.map(|(pid, _)| pid),
            ));
            errors.push(NONE);
        }
        errors
    }

    fn tombstone_offset(&mut self, group: &str, topic: &str, partition: i32) {
        self.records.push(Record {
            partition: self.partition_for(group),
            key: records::offset_key(group, topic, partition),
            value: None,
            producer: None,
        });
    }

    fn tombstone_group(&mut self, group: &str) {
        self.records.push(Record {
            partition: self.partition_for(group),
            key: records::group_key(group),
            value: None,
            producer: None,
        });
    }

    /// Records the group's membership as of now.
    fn store_group(&mut self, g: &Group, now: i64) {
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let value = GroupValue {
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            generation_id: g.generation_id,
            protocol_name: g.protocol_name.clone(),
            leader: g.leader_id.clone(),
            state_timestamp_ms: g.state_timestamp_ms.unwrap_or(now),
            members: g
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        self.records.push(Record {
            partition: self.partition_for(&g.group_id),
            key: records::group_key(&g.group_id),
            value: Some(records::group_value(&value)),
            producer: None,
        });
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `__consumer_offsets` partition of a group: Java's `String.hashCode` of the id, made
/// non-negative as Kafka's `Utils.abs` does, modulo the partition count. Matching Kafka keeps
/// a data directory's layout recognisable to Kafka tooling.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Offsets a transaction committed: (group, topic, partition) → value.
type PendingOffsets = BTreeMap<(String, String, i32), OffsetValue>;

/// The coordinator for every group of this broker.
#[derive(Debug)]
pub struct GroupCoordinator {
    groups: BTreeMap<String, Group>,
    /// Transactional offset commits not yet decided, by (offsets partition, producer id):
    /// the latest value per (group, topic, partition). A marker decides them for its own
    /// partition only, as Kafka scopes completion to the partitions it was written to.
    txn_offsets: BTreeMap<(i32, i64), PendingOffsets>,
    fx: Effects,
    next_retention_check_ms: i64,
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        let rng = config.seed;
        Self {
            groups: BTreeMap::new(),
            txn_offsets: BTreeMap::new(),
            fx: Effects {
                config,
                outputs: Vec::new(),
                records: Vec::new(),
                pending_offsets: Vec::new(),
                rng,
            },
            next_retention_check_ms: i64::MIN,
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.fx.config
    }

    /// The `__consumer_offsets` partition that holds this group.
    pub fn partition_for(&self, group: &str) -> i32 {
        self.fx.partition_for(group)
    }

    /// Responses to requests that waited, in the order they were decided.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.fx.outputs)
    }

    /// Records to append to `__consumer_offsets`, in the order they were decided. The caller
    /// must append them in this order, then report with [`GroupCoordinator::records_appended`].
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.fx.records)
    }

    /// Reports whether the records last taken were appended. Committed offsets become visible
    /// only then: a commit whose record could not be written never shows in OffsetFetch.
    /// (Membership changes cannot wait: a rebalance has already been answered.)
    pub fn records_appended(&mut self, appended: bool) {
        for (group, topic, partition, value, producer) in
            std::mem::take(&mut self.fx.pending_offsets)
        {
            if !appended {
                continue;
            }
            if let Some(pid) = producer {
                let offsets_partition = self.fx.partition_for(&group);
                self.txn_offsets
                    .entry((offsets_partition, pid))
                    .or_default()
                    .insert((group, topic, partition), value);
            } else if let Some(g) = self.groups.get_mut(&group) {
                g.offsets.insert((topic, partition), value);
            }
        }
    }

    pub fn join_group(
        &mut self,
        req: JoinRequest,
        waiter: WaiterId,
        now: i64,
    ) -> Option<JoinResponse> {
        if !valid_group_id(&req.group_id) {
            return Some(JoinResponse::error(INVALID_GROUP_ID, &req.member_id));
        }
        // Every string the group record stores has an i16 length there.
        let fits = |s: &str| s.len() <= RECORD_STRING_MAX_BYTES;
        if !fits(&req.protocol_type)
            || !req.group_instance_id.as_deref().is_none_or(fits)
            || !fits(&req.client_id)
            || !req.protocols.iter().all(|(n, _)| fits(n))
        {
            return Some(JoinResponse::error(INVALID_REQUEST, &req.member_id));
        }
        let cfg = &self.fx.config;
        if req.session_timeout_ms < cfg.session_timeout_min_ms
            || req.session_timeout_ms > cfg.session_timeout_max_ms
        {
            return Some(JoinResponse::error(INVALID_SESSION_TIMEOUT, &req.member_id));
        }
        // Each protocol is charged its bytes plus what keeping it costs, so that many tiny
        // entries cannot slip under the byte limit.
        let metadata_bytes: usize = req
            .protocols
            .iter()
            .map(|(n, m)| n.len() + m.len() + PROTOCOL_OVERHEAD_BYTES)
            .sum();
        if metadata_bytes > cfg.member_metadata_max_bytes
            || req.protocols.len() > cfg.member_protocols_max
            || req.rebalance_timeout_ms < 0
        {
            return Some(JoinResponse::error(INVALID_REQUEST, &req.member_id));
        }
        let mut names = BTreeSet::new();
        if req
            .protocols
            .iter()
            .any(|(n, _)| n.is_empty() || !names.insert(n.as_str()))
        {
            return Some(JoinResponse::error(
                INCONSISTENT_GROUP_PROTOCOL,
                &req.member_id,
            ));
        }
        let new_member = req.member_id.is_empty();
        if !new_member && !self.groups.contains_key(&req.group_id) {
            return Some(JoinResponse::error(UNKNOWN_MEMBER_ID, &req.member_id));
        }
        let g = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, now));
        let names: Vec<&str> = req.protocols.iter().map(|(n, _)| n.as_str()).collect();
        if g.state == GroupState::Dead {
            return Some(JoinResponse::error(
                COORDINATOR_NOT_AVAILABLE,
                &req.member_id,
            ));
        }
        if !g.supports_protocols(&req.protocol_type, &names) {
            let response = JoinResponse::error(INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
            if g.members.is_empty() && g.offsets.is_empty() && g.generation_id == 0 {
                self.groups.remove(&req.group_id);
            }
            return Some(response);
        }
        let fx = &mut self.fx;
        if new_member {
            join_new_member(g, fx, req, waiter, now)
        } else {
            join_known_member(g, fx, req, waiter, now)
        }
    }

    pub fn sync_group(
        &mut self,
        req: SyncRequest,
        waiter: WaiterId,
        now: i64,
    ) -> Option<SyncResponse> {
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            return Some(SyncResponse::error(UNKNOWN_MEMBER_ID));
        };
        if g.state == GroupState::Dead {
            return Some(SyncResponse::error(COORDINATOR_NOT_AVAILABLE));
        }
        if let Err(e) = g.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            return Some(SyncResponse::error(e));
        }
        if req.generation_id != g.generation_id {
            return Some(SyncResponse::error(ILLEGAL_GENERATION));
        }
        let mismatch = |given: &Option<String>, ours: &Option<String>| {
            given
                .as_ref()
                .is_some_and(|given| Some(given) != ours.as_ref())
        };
        if mismatch(&req.protocol_type, &g.protocol_type)
            || mismatch(&req.protocol_name, &g.protocol_name)
        {
            return Some(SyncResponse::error(INCONSISTENT_GROUP_PROTOCOL));
        }
        match g.state {
            GroupState::Empty | GroupState::Dead => Some(SyncResponse::error(UNKNOWN_MEMBER_ID)),
            GroupState::PreparingRebalance => Some(SyncResponse::error(REBALANCE_IN_PROGRESS)),
            GroupState::Stable => {
                let member = g.members.get_mut(&req.member_id).expect("checked");
                member.touch(now);
                Some(SyncResponse {
                    error: NONE,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let member = g.members.get_mut(&req.member_id).expect("checked");
                let old = member.sync_waiter.replace(waiter);
                self.fx
                    .reply_sync(old, SyncResponse::error(REBALANCE_IN_PROGRESS));
                if g.is_leader(&req.member_id) {
                    for m in g.members.values_mut() {
                        m.assignment = Bytes::new();
                    }
                    for (id, assignment) in req.assignments {
                        if let Some(m) = g.members.get_mut(&id) {
                            m.assignment = assignment;
                        }
                    }
                    g.transition(GroupState::Stable, now);
                    self.fx.store_group(g, now);
                    for m in g.members.values_mut() {
                        m.touch(now);
                        let response = SyncResponse {
                            error: NONE,
                            protocol_type: g.protocol_type.clone(),
                            protocol_name: g.protocol_name.clone(),
                            assignment: m.assignment.clone(),
                        };
                        self.fx.reply_sync(m.sync_waiter.take(), response);
                    }
                }
                None
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now: i64,
    ) -> i16 {
        let Some(g) = self.groups.get_mut(group_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if g.state == GroupState::Dead {
            return COORDINATOR_NOT_AVAILABLE;
        }
        if let Err(e) = g.check_member(member_id, group_instance_id) {
            return e;
        }
        if generation_id != g.generation_id {
            return ILLEGAL_GENERATION;
        }
        let member = g.members.get_mut(member_id).expect("checked");
        match g.state {
            GroupState::Empty | GroupState::Dead => UNKNOWN_MEMBER_ID,
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.touch(now);
                NONE
            }
            GroupState::PreparingRebalance => {
                member.touch(now);
                REBALANCE_IN_PROGRESS
            }
        }
    }

    /// Removes members, each given by member id or group instance id (or both). Returns the
    /// group-level error and one error per member.
    pub fn leave_group(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: i64,
    ) -> (i16, Vec<i16>) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return (NONE, vec![UNKNOWN_MEMBER_ID; members.len()]);
        };
        if g.state == GroupState::Dead {
            return (COORDINATOR_NOT_AVAILABLE, vec![NONE; members.len()]);
        }
        let mut errors = Vec::with_capacity(members.len());
        let mut removed_any = false;
        for (member_id, instance) in members {
            let target = match instance {
                Some(instance) => match g.static_members.get(instance) {
                    None => Err(UNKNOWN_MEMBER_ID),
                    Some(holder) if !member_id.is_empty() && holder != member_id => {
                        Err(FENCED_INSTANCE_ID)
                    }
                    Some(holder) => Ok(holder.clone()),
                },
                None if g.pending_members.remove(member_id).is_some() => {
                    errors.push(NONE);
                    continue;
                }
                None if g.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(UNKNOWN_MEMBER_ID),
            };
            match target {
                Ok(id) => {
                    remove_member(g, &mut self.fx, &id);
                    removed_any = true;
                    errors.push(NONE);
                }
                Err(e) => errors.push(e),
            }
        }
        if removed_any {
            member_removed(g, &mut self.fx, now);
        }
        (NONE, errors)
    }

    /// Commits offsets. `Err` is an error for every partition; otherwise one error per offset.
    pub fn commit_offsets(&mut self, req: CommitRequest, now: i64) -> Result<Vec<i16>, i16> {
        let g = match self.groups.get_mut(&req.group_id) {
            Some(g) => g,
            None if req.generation_id < 0 => self
                .groups
                .entry(req.group_id.clone())
                .or_insert_with(|| Group::new(&req.group_id, now)),
            None => return Err(ILLEGAL_GENERATION),
        };
        if g.state == GroupState::Dead {
            return Err(COORDINATOR_NOT_AVAILABLE);
        }
        // Kafka's order: a commit naming a member or generation is checked as a member's;
        // one from outside the group protocol is accepted only while the group is empty.
        let from_member =
            req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some();
        if from_member {
            g.check_member(&req.member_id, req.group_instance_id.as_deref())?;
            if req.generation_id != g.generation_id {
                return Err(ILLEGAL_GENERATION);
            }
            if g.state == GroupState::CompletingRebalance {
                return Err(REBALANCE_IN_PROGRESS);
            }
            g.members
                .get_mut(&req.member_id)
                .expect("checked")
                .touch(now);
        } else if g.state != GroupState::Empty {
            return Err(UNKNOWN_MEMBER_ID);
        }
        let expire =
            (req.retention_time_ms >= 0).then(|| now.saturating_add(req.retention_time_ms));
        Ok(self
            .fx
            .commit(&req.group_id, req.offsets, now, expire, None))
    }

    /// TxnOffsetCommit: offsets committed inside producer `producer_id`'s transaction. They
    /// are written now (in the producer's transactional batch) and become visible only when
    /// [`GroupCoordinator::complete_txn`] reports the transaction committed. As in Kafka, a
    /// commit naming a member must come from a current member and generation; one without a
    /// member id (a producer outside the group protocol) is accepted in any state.
    pub fn txn_commit_offsets(&mut self, req: TxnCommitRequest, now: i64) -> Result<Vec<i16>, i16> {
        if !valid_group_id(&req.group_id) {
            return Err(INVALID_GROUP_ID);
        }
        let g = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, now));
        if g.state == GroupState::Dead {
            return Err(COORDINATOR_NOT_AVAILABLE);
        }
        if !req.member_id.is_empty() {
            g.check_member(&req.member_id, req.group_instance_id.as_deref())?;
        }
        if req.generation_id >= 0 && req.generation_id != g.generation_id {
            return Err(ILLEGAL_GENERATION);
        }
        let producer = Some((req.producer_id, req.producer_epoch));
        Ok(self
            .fx
            .commit(&req.group_id, req.offsets, now, None, producer))
    }

    /// Producer `producer_id`'s transaction ended: its marker is in `__consumer_offsets`
    /// partition `offsets_partition`, whose transactional offset commits of that producer
    /// are applied on commit and dropped on abort.
    pub fn complete_txn(&mut self, offsets_partition: i32, producer_id: i64, commit: bool) {
        let Some(pending) = self.txn_offsets.remove(&(offsets_partition, producer_id)) else {
            return;
        };
        if !commit {
            return;
        }
        for ((group, topic, partition), value) in pending {
            // The group may hold nothing else (loading drops empty groups): commit anyway.
            self.groups
                .entry(group.clone())
                .or_insert_with(|| loaded_group(&group))
                .offsets
                .insert((topic, partition), value);
        }
    }

    /// Whether a transaction that has not ended holds an offset commit for this partition:
    /// OffsetFetch with `require_stable` then answers UNSTABLE_OFFSET_COMMIT (KIP-447).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let key = (group_id.to_string(), topic.to_string(), partition);
        self.txn_offsets.values().any(|p| p.contains_key(&key))
    }

    /// Committed offsets of a group: for the given partitions, or for every partition with a
    /// committed offset when `partitions` is `None`. `None` in the result: nothing committed.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, Option<Committed>)> {
        let g = self.groups.get(group_id);
        let committed = |v: &OffsetValue| Committed {
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata.clone(),
        };
        match partitions {
            Some(topics) => topics
                .iter()
                .flat_map(|(topic, parts)| {
                    parts.iter().map(move |&p| {
                        let v = g.and_then(|g| g.offsets.get(&(topic.clone(), p)));
                        (topic.clone(), p, v.map(committed))
                    })
                })
                .collect(),
            None => g
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), v)| (t.clone(), *p, Some(committed(v))))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Groups whose state is one of `states` (case-insensitive; all if empty).
    pub fn list_groups(&self, states: &[String]) -> Vec<GroupListing> {
        self.groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| GroupListing {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    /// How many members a group has (0 for an unknown group).
    pub fn member_count(&self, group_id: &str) -> usize {
        self.groups.get(group_id).map_or(0, |g| g.members.len())
    }

    /// A group as DescribeGroups shows it; an unknown group is `Dead` with no members.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let Some(g) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            group_id: g.group_id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// Deletes empty groups and their offsets; one error per group.
    pub fn delete_groups(&mut self, group_ids: &[String], now: i64) -> Vec<i16> {
        group_ids
            .iter()
            .map(|id| {
                let Some(g) = self.groups.get(id) else {
                    return GROUP_ID_NOT_FOUND;
                };
                match g.state {
                    GroupState::Dead => GROUP_ID_NOT_FOUND,
                    GroupState::Empty => {
                        let g = self.groups.remove(id).expect("present");
                        self.tombstone_group(g, now);
                        NONE
                    }
                    _ => NON_EMPTY_GROUP,
                }
            })
            .collect()
    }

    fn tombstone_group(&mut self, g: Group, _now: i64) {
        for (topic, p) in g.offsets.keys() {
            self.fx.tombstone_offset(&g.group_id, topic, *p);
        }
        self.fx.tombstone_group(&g.group_id);
    }

    /// Deletes committed offsets of a group. A partition of a topic the group's members
    /// subscribe to gets GROUP_SUBSCRIBED_TO_TOPIC. Returns the group-level error and one
    /// error per partition.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        _now: i64,
    ) -> (i16, Vec<i16>) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return (GROUP_ID_NOT_FOUND, Vec::new());
        };
        if g.state == GroupState::Dead {
            return (GROUP_ID_NOT_FOUND, Vec::new());
        }
        let subscribed = if g.state == GroupState::Empty {
            BTreeSet::new()
        } else {
            match g.subscribed_topics() {
                Some(topics) => topics,
                None => return (NON_EMPTY_GROUP, Vec::new()),
            }
        };
        let errors = partitions
            .iter()
            .map(|(topic, p)| {
                if subscribed.contains(topic) {
                    return GROUP_SUBSCRIBED_TO_TOPIC;
                }
                if g.offsets.remove(&(topic.clone(), *p)).is_some() {
                    self.fx.tombstone_offset(group_id, topic, *p);
                }
                NONE
            })
            .collect();
        (NONE, errors)
    }

    /// Forgets every group's committed offsets of a deleted topic, so that a new topic of the
    /// same name does not inherit them (Kafka does the same).
    pub fn delete_topic_offsets(&mut self, topic: &str) {
        for g in self.groups.values_mut() {
            let gone: Vec<i32> = g
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| *p)
                .collect();
            for p in gone {
                g.offsets.remove(&(topic.to_string(), p));
                self.fx.tombstone_offset(&g.group_id, topic, p);
            }
        }
    }

    /// The earliest time at which [`GroupCoordinator::tick`] has something to do: a session
    /// or a pending member to expire, a rebalance timer to run out, an offset retention check.
    /// The shell sleeps until then (or until a request changes the answer), so a session
    /// expires at its deadline, not at the next periodic tick.
    pub fn next_deadline(&self) -> i64 {
        let mut next = self.next_retention_check_ms;
        for g in self.groups.values() {
            if let Some(&d) = g.pending_members.values().min() {
                next = next.min(d);
            }
            for m in g.members.values() {
                if m.join_waiter.is_none() && m.sync_waiter.is_none() {
                    next = next.min(m.heartbeat_deadline_ms);
                }
            }
            if matches!(
                g.state,
                GroupState::CompletingRebalance | GroupState::PreparingRebalance
            ) {
                next = next.min(g.rebalance_deadline_ms);
            }
        }
        next
    }

    /// Expires sessions, pending members and offsets, and completes rebalances whose timers
    /// have run out.
    pub fn tick(&mut self, now: i64) {
        for g in self.groups.values_mut() {
            let expired_pending: Vec<String> = g
                .pending_members
                .iter()
                .filter(|(_, &deadline)| deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired_pending {
                g.pending_members.remove(id);
            }
            // Members with a JoinGroup or SyncGroup in flight are alive by definition.
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && m.heartbeat_deadline_ms <= now
                })
                .map(|m| m.member_id.clone())
                .collect();
            for id in &expired {
                remove_member(g, &mut self.fx, id);
            }
            // Members that have not sent SyncGroup by the deadline are dropped, so followers
            // do not wait forever for a leader that never assigns.
            let mut removed = !expired.is_empty();
            if g.state == GroupState::CompletingRebalance && now >= g.rebalance_deadline_ms {
                let unsynced: Vec<String> = g
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_none())
                    .map(|m| m.member_id.clone())
                    .collect();
                for id in &unsynced {
                    remove_member(g, &mut self.fx, id);
                }
                removed |= !unsynced.is_empty();
            }
            if removed {
                member_removed(g, &mut self.fx, now);
            } else if g.state == GroupState::PreparingRebalance {
                try_complete_join(g, &mut self.fx, now);
            }
        }
        if now >= self.next_retention_check_ms {
            self.next_retention_check_ms =
                now.saturating_add(self.fx.config.offsets_retention_check_interval_ms);
            self.expire_offsets(now);
        }
    }

    /// Removes committed offsets past retention: for an empty group, all of them once the
    /// retention has passed since the group became empty (or since the commit, for groups that
    /// never had members); for a consumer group with members, those of topics nobody
    /// subscribes to any more. An empty group left without offsets is deleted.
    fn expire_offsets(&mut self, now: i64) {
        let retention = self.fx.config.offsets_retention_ms;
        let mut dead = Vec::new();
        for g in self.groups.values_mut() {
            let subscribed = g.subscribed_topics();
            let empty = g.state == GroupState::Empty;
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|((topic, _), v)| match v.expire_timestamp_ms {
                    Some(_) if subscribed.as_ref().is_some_and(|s| s.contains(topic)) => false,
                    Some(at) => now >= at,
                    // A group that never had members (offsets committed from outside the
                    // group protocol) keeps each offset for the retention after its commit.
                    None if empty && g.protocol_type.is_none() => {
                        v.commit_timestamp_ms.saturating_add(retention) <= now
                    }
                    None if empty => {
                        let base = g.state_timestamp_ms.unwrap_or(v.commit_timestamp_ms);
                        base.saturating_add(retention) <= now
                    }
                    None => {
                        subscribed.as_ref().is_some_and(|s| !s.contains(topic))
                            && v.commit_timestamp_ms.saturating_add(retention) <= now
                    }
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                g.offsets.remove(&key);
                self.fx.tombstone_offset(&g.group_id, &key.0, key.1);
            }
            if empty && g.offsets.is_empty() && g.members.is_empty() {
                dead.push((g.group_id.clone(), g.generation_id > 0));
            }
        }
        for (id, stored) in dead {
            self.groups.remove(&id);
            // A group that never completed a rebalance has no record to delete.
            if stored {
                self.fx.tombstone_group(&id);
            }
        }
    }

    /// Applies one `__consumer_offsets` record during loading. Later records override earlier
    /// ones with the same key, exactly as compaction would leave them.
    pub fn replay(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        now: i64,
    ) -> Result<(), records::BadRecord> {
        match records::decode_key(key)? {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => match value {
                Some(v) => {
                    let v = records::decode_offset_value(v)?;
                    self.groups
                        .entry(group.clone())
                        .or_insert_with(|| loaded_group(&group))
                        .offsets
                        .insert((topic, partition), v);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            RecordKey::Group { group } => match value {
                Some(v) => {
                    let v = records::decode_group_value(v)?;
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| loaded_group(&group));
                    apply_group_value(g, v, now);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        let offsets = std::mem::take(&mut g.offsets);
                        *g = loaded_group(&group);
                        g.offsets = offsets;
                    }
                }
            },
        }
        Ok(())
    }

    /// Applies one `__consumer_offsets` record of a transactional batch of `producer_id`
    /// during loading: held until the producer's marker is replayed.
    pub fn replay_txn(
        &mut self,
        producer_id: i64,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), records::BadRecord> {
        if let (
            RecordKey::Offset {
                group,
                topic,
                partition,
            },
            Some(v),
        ) = (records::decode_key(key)?, value)
        {
            let v = records::decode_offset_value(v)?;
            self.groups
                .entry(group.clone())
                .or_insert_with(|| loaded_group(&group));
            let offsets_partition = self.fx.partition_for(&group);
            self.txn_offsets
                .entry((offsets_partition, producer_id))
                .or_default()
                .insert((group, topic, partition), v);
        }
        Ok(())
    }

    /// Ends loading: groups with members become Stable (their sessions start now), others
    /// Empty; groups with neither members nor offsets are dropped.
    pub fn finish_loading(&mut self, now: i64) {
        self.groups.retain(|_, g| {
            !(g.members.is_empty()
                && g.offsets.is_empty()
                && g.generation_id == 0
                && g.protocol_type.is_none())
        });
        for g in self.groups.values_mut() {
            for m in g.members.values_mut() {
                m.touch(now);
            }
            g.state = if g.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
        }
    }

    /// How many committed offsets the coordinator holds, over all groups.
    pub fn offset_count(&self) -> usize {
        self.groups.values().map(|g| g.offsets.len()).sum()
    }
}

fn loaded_group(group_id: &str) -> Group {
    let mut g = Group::new(group_id, 0);
    g.state_timestamp_ms = None;
    g
}

fn apply_group_value(g: &mut Group, v: GroupValue, now: i64) {
    g.generation_id = v.generation_id;
    g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
    g.protocol_name = v.protocol_name;
    g.leader_id = v.leader;
    g.state_timestamp_ms = (v.state_timestamp_ms >= 0).then_some(v.state_timestamp_ms);
    g.members.clear();
    g.static_members.clear();
    let protocol = g.protocol_name.clone().unwrap_or_default();
    for m in v.members {
        if let Some(instance) = &m.group_instance_id {
            g.static_members
                .insert(instance.clone(), m.member_id.clone());
        }
        g.members.insert(
            m.member_id.clone(),
            Member {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                join_waiter: None,
                sync_waiter: None,
                supports_skip_assignment: false,
                heartbeat_deadline_ms: now,
            },
        );
    }
}

fn new_member(req: &JoinRequest, member_id: String, waiter: WaiterId) -> Member {
    Member {
        member_id,
        group_instance_id: req.group_instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        session_timeout_ms: req.session_timeout_ms,
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        join_waiter: Some(waiter),
        sync_waiter: None,
        supports_skip_assignment: req.supports_skip_assignment,
        heartbeat_deadline_ms: 0,
    }
}

fn join_new_member(
    g: &mut Group,
    fx: &mut Effects,
    req: JoinRequest,
    waiter: WaiterId,
    now: i64,
) -> Option<JoinResponse> {
    if let Some(instance) = req.group_instance_id.clone() {
        if let Some(old_id) = g.static_members.get(&instance).cloned() {
            return replace_static_member(g, fx, req, &old_id, waiter, now);
        }
        if g.members.len() >= fx.config.group_max_size {
            return Some(JoinResponse::error(GROUP_MAX_SIZE_REACHED, ""));
        }
        let id = fx.member_id(&instance);
        add_member_and_rebalance(g, fx, &req, id, waiter, now);
        return None;
    }
    if g.members.len() + g.pending_members.len() >= fx.config.group_max_size {
        return Some(JoinResponse::error(GROUP_MAX_SIZE_REACHED, ""));
    }
    let id = fx.member_id(&req.client_id);
    if req.require_known_member_id {
        // KIP-394: the member must come back with this id, so that a client that times out
        // and retries does not leave an orphan member behind.
        g.pending_members
            .insert(id.clone(), now + i64::from(req.session_timeout_ms));
        return Some(JoinResponse::error(MEMBER_ID_REQUIRED, &id));
    }
    add_member_and_rebalance(g, fx, &req, id, waiter, now);
    None
}

fn join_known_member(
    g: &mut Group,
    fx: &mut Effects,
    req: JoinRequest,
    waiter: WaiterId,
    now: i64,
) -> Option<JoinResponse> {
    let id = req.member_id.clone();
    if g.pending_members.contains_key(&id) {
        // A member told MEMBER_ID_REQUIRED was dynamic; it cannot come back as the holder of
        // another member's instance id.
        if let Some(instance) = &req.group_instance_id {
            if g.static_members.contains_key(instance) {
                return Some(JoinResponse::error(FENCED_INSTANCE_ID, &id));
            }
        }
        g.pending_members.remove(&id);
        add_member_and_rebalance(g, fx, &req, id, waiter, now);
        return None;
    }
    if let Err(e) = g.check_member(&id, req.group_instance_id.as_deref()) {
        return Some(JoinResponse::error(e, &id));
    }
    let member = g.members.get(&id).expect("checked");
    match g.state {
        GroupState::Empty | GroupState::Dead => Some(JoinResponse::error(UNKNOWN_MEMBER_ID, &id)),
        GroupState::PreparingRebalance => {
            update_member_and_rebalance(g, fx, &req, waiter, now);
            None
        }
        GroupState::CompletingRebalance if member.same_protocols(&req.protocols) => {
            // The member lost our JoinGroup response; give it the same one again.
            let leader = g.is_leader(&id);
            g.members.get_mut(&id).expect("checked").touch(now);
            Some(g.join_result(&id, leader))
        }
        GroupState::Stable if !g.is_leader(&id) && member.same_protocols(&req.protocols) => {
            g.members.get_mut(&id).expect("checked").touch(now);
            Some(g.join_result(&id, false))
        }
        _ => {
            update_member_and_rebalance(g, fx, &req, waiter, now);
            None
        }
    }
}

/// KIP-345: a static member rejoining without its member id (a restart) takes over its
/// instance id; the old member id is fenced. In a stable group with unchanged protocols the
/// member gets its previous assignment back without a rebalance.
fn replace_static_member(
    g: &mut Group,
    fx: &mut Effects,
    req: JoinRequest,
    old_id: &str,
    waiter: WaiterId,
    now: i64,
) -> Option<JoinResponse> {
    let instance = req.group_instance_id.clone().expect("static");
    let mut member = g
        .members
        .remove(old_id)
        .expect("static members are members");
    let fenced = JoinResponse::error(FENCED_INSTANCE_ID, old_id);
    fx.reply_join(member.join_waiter.take(), fenced);
    fx.reply_sync(
        member.sync_waiter.take(),
        SyncResponse::error(FENCED_INSTANCE_ID),
    );
    let new_id = fx.member_id(&instance);
    let old_leader = g.leader_id.clone().unwrap_or_default();
    member.protocols = req.protocols.clone();
    member.member_id = new_id.clone();
    member.client_id = req.client_id.clone();
    member.client_host = req.client_host.clone();
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.supports_skip_assignment = req.supports_skip_assignment;
    g.static_members.insert(instance, new_id.clone());
    if g.is_leader(old_id) {
        g.leader_id = Some(new_id.clone());
    }
    member.touch(now);
    g.members.insert(new_id.clone(), member);
    // Metadata may differ after a restart (sticky assignors carry owned partitions); what
    // matters is whether the group would pick another protocol.
    if g.state == GroupState::Stable && g.select_protocol() == g.protocol_name {
        fx.store_group(g, now);
        let leader = g.is_leader(&new_id);
        let mut response = g.join_result(&new_id, leader);
        // As Kafka does: the leader id from before the replacement, so that a restarted
        // leader (whose id changed) does not compute an assignment a stable group would not
        // hand out; JoinGroup v9+ also says so with skip_assignment.
        response.leader = old_leader;
        response.skip_assignment = leader;
        return Some(response);
    }
    let req = JoinRequest {
        member_id: new_id,
        ..req
    };
    update_member_and_rebalance(g, fx, &req, waiter, now);
    None
}

fn add_member_and_rebalance(
    g: &mut Group,
    fx: &mut Effects,
    req: &JoinRequest,
    member_id: String,
    waiter: WaiterId,
    now: i64,
) {
    if g.members.is_empty() {
        g.protocol_type = Some(req.protocol_type.clone());
    }
    if let Some(instance) = &req.group_instance_id {
        g.static_members.insert(instance.clone(), member_id.clone());
    }
    if g.leader_id.is_none() {
        g.leader_id = Some(member_id.clone());
    }
    g.members
        .insert(member_id.clone(), new_member(req, member_id, waiter));
    if let Some(delay) = &mut g.initial_delay {
        delay.new_member_joined = true;
    }
    maybe_prepare_rebalance(g, fx, now);
    try_complete_join(g, fx, now);
}

fn update_member_and_rebalance(
    g: &mut Group,
    fx: &mut Effects,
    req: &JoinRequest,
    waiter: WaiterId,
    now: i64,
) {
    let member = g.members.get_mut(&req.member_id).expect("known member");
    member.protocols = req.protocols.clone();
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.supports_skip_assignment = req.supports_skip_assignment;
    // A second JoinGroup while one is parked: the client gave up on the first.
    let old = member.join_waiter.replace(waiter);
    fx.reply_join(
        old,
        JoinResponse::error(REBALANCE_IN_PROGRESS, &req.member_id),
    );
    maybe_prepare_rebalance(g, fx, now);
    try_complete_join(g, fx, now);
}

fn maybe_prepare_rebalance(g: &mut Group, fx: &mut Effects, now: i64) {
    match g.state {
        GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty => {}
        _ => return,
    }
    if g.state == GroupState::CompletingRebalance {
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
            fx.reply_sync(
                m.sync_waiter.take(),
                SyncResponse::error(REBALANCE_IN_PROGRESS),
            );
        }
    }
    let rebalance_timeout = g.max_rebalance_timeout_ms();
    if g.state == GroupState::Empty {
        let delay = i64::from(fx.config.initial_rebalance_delay_ms).min(rebalance_timeout);
        g.initial_delay = Some(InitialDelay {
            remaining_ms: (rebalance_timeout - delay).max(0),
            new_member_joined: false,
        });
        g.rebalance_deadline_ms = now + delay;
    } else {
        g.initial_delay = None;
        g.rebalance_deadline_ms = now + rebalance_timeout;
    }
    g.transition(GroupState::PreparingRebalance, now);
}

fn try_complete_join(g: &mut Group, fx: &mut Effects, now: i64) {
    if g.state != GroupState::PreparingRebalance {
        return;
    }
    if let Some(delay) = &mut g.initial_delay {
        if now < g.rebalance_deadline_ms {
            return;
        }
        if delay.new_member_joined && delay.remaining_ms > 0 {
            let next = i64::from(fx.config.initial_rebalance_delay_ms).min(delay.remaining_ms);
            delay.remaining_ms -= next;
            delay.new_member_joined = false;
            g.rebalance_deadline_ms = now + next;
            return;
        }
        g.initial_delay = None;
        complete_join(g, fx, now);
    } else if g.has_all_members_joined() || now >= g.rebalance_deadline_ms {
        complete_join(g, fx, now);
    }
}

fn complete_join(g: &mut Group, fx: &mut Effects, now: i64) {
    // Static members that did not rejoin stay until their session expires, as in Kafka:
    // a restarting static member must find its place.
    let failed: Vec<String> = g
        .members
        .values()
        .filter(|m| m.join_waiter.is_none() && m.group_instance_id.is_none())
        .map(|m| m.member_id.clone())
        .collect();
    for id in &failed {
        remove_member(g, fx, id);
    }
    g.generation_id = g.generation_id.wrapping_add(1);
    if g.members.is_empty() {
        g.protocol_name = None;
        g.leader_id = None;
        g.transition(GroupState::Empty, now);
        fx.store_group(g, now);
        return;
    }
    if g.leader_id
        .as_ref()
        .is_none_or(|l| !g.members.contains_key(l))
    {
        g.leader_id = g.members.keys().next().cloned();
    }
    g.protocol_name = g.select_protocol();
    g.transition(GroupState::CompletingRebalance, now);
    // The leader has the rebalance timeout to send its assignment (Kafka 3.2+).
    g.rebalance_deadline_ms = now + g.max_rebalance_timeout_ms();
    let ids: Vec<String> = g.members.keys().cloned().collect();
    for id in ids {
        let response = g.join_result(&id, g.is_leader(&id));
        let m = g.members.get_mut(&id).expect("present");
        m.touch(now);
        fx.reply_join(m.join_waiter.take(), response);
    }
}

/// Removes a member and answers whatever it has parked with UNKNOWN_MEMBER_ID.
fn remove_member(g: &mut Group, fx: &mut Effects, member_id: &str) {
    let Some(mut m) = g.members.remove(member_id) else {
        return;
    };
    if let Some(instance) = &m.group_instance_id {
        if g.static_members.get(instance).map(String::as_str) == Some(member_id) {
            g.static_members.remove(instance);
        }
    }
    fx.reply_join(
        m.join_waiter.take(),
        JoinResponse::error(UNKNOWN_MEMBER_ID, member_id),
    );
    fx.reply_sync(m.sync_waiter.take(), SyncResponse::error(UNKNOWN_MEMBER_ID));
    if g.is_leader(member_id) {
        g.leader_id = g.members.keys().next().cloned();
    }
}

fn member_removed(g: &mut Group, fx: &mut Effects, now: i64) {
    match g.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            maybe_prepare_rebalance(g, fx, now);
            try_complete_join(g, fx, now);
        }
        GroupState::PreparingRebalance => try_complete_join(g, fx, now),
        GroupState::Empty | GroupState::Dead => {}
    }
}

#[cfg(test)]
mod tests;
