//! Membership of a consumer group over Kafka's classic group protocol, for `sluice consume
//! --group`: FindCoordinator; JoinGroup, answering MEMBER_ID_REQUIRED by joining again with
//! the id the coordinator gave; SyncGroup, where the leader hands every member its share of a
//! range assignment; Heartbeat; OffsetFetch and OffsetCommit; LeaveGroup.
//!
//! The member metadata is Kafka's consumer protocol (protocol type `consumer`, protocol
//! `range`), so Kafka's own clients can share a group with it. Sent at version 0:
//!
//! ```text
//! subscription  i16 version = 0 | i32 count, then per topic: i16 length, UTF-8 name
//!               | i32 user data length = -1 (null)
//! assignment    i16 version = 0 | i32 count, then per topic: i16 length, UTF-8 name
//!                                 | i32 count, then per partition: i32 partition
//!               | i32 user data length = -1 (null)
//! ```
//! Members' subscriptions and our assignment are read with `sluice_group::subscription`, which
//! reads any version and bounds every count by the bytes there are.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use sluice_group::subscription::{assigned_partitions, subscribed_topics};

use crate::client::Client;
use crate::requests::{check, check_with, metadata, s};

const PROTOCOL_TYPE: &str = "consumer";
const ASSIGNOR: &str = "range";
/// How long the coordinator waits for a heartbeat before it drops the member.
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// Kafka's usual third of the session timeout.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(3_000);
/// How long a rebalance waits for this member to rejoin. The CLI rejoins at its next
/// heartbeat, a few seconds at most.
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// How long the coordinator may hold a JoinGroup or SyncGroup: a rebalance waits for every
/// member, up to the longest rebalance timeout among them (ours, unless another client set
/// a longer one).
const REBALANCE_WAIT: Duration = Duration::from_secs(60);
/// Joins retried after MEMBER_ID_REQUIRED, a rebalance during SyncGroup or a lost member id,
/// before giving up.
const JOIN_ATTEMPTS_MAX: u32 = 10;

/// What a heartbeat said.
#[derive(Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Not due yet, or the generation goes on.
    Continue,
    /// The group is rebalancing, or has moved on without us: commit and join again.
    Rejoin,
}

pub struct GroupMember {
    coordinator: Client,
    group: String,
    topic: String,
    member_id: String,
    generation_id: i32,
    next_heartbeat: Instant,
}

impl GroupMember {
    /// Finds the group's coordinator (through `bootstrap`) and connects to it.
    pub fn connect(bootstrap: &mut Client, group: &str, topic: &str) -> Result<Self, String> {
        let req = FindCoordinatorRequest::default()
            .with_key(s(group))
            .with_key_type(0);
        let resp: FindCoordinatorResponse = bootstrap.call(ApiKey::FindCoordinator, &req)?;
        check_with(
            resp.error_code,
            &resp.error_message,
            &format!("FindCoordinator for group {group}"),
        )?;
        let address = format!("{}:{}", resp.host.as_str(), resp.port);
        Ok(Self {
            coordinator: Client::connect(&address)?,
            group: group.to_string(),
            topic: topic.to_string(),
            member_id: String::new(),
            generation_id: -1,
            next_heartbeat: Instant::now(),
        })
    }

    /// Joins the group (again) and returns the partitions of our topic assigned to us.
    /// `bootstrap` answers the leader's Metadata request for the members' topics.
    pub fn join(&mut self, bootstrap: &mut Client) -> Result<Vec<i32>, String> {
        for _ in 0..JOIN_ATTEMPTS_MAX {
            if let Some(partitions) = self.try_join(bootstrap)? {
                self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                return Ok(partitions);
            }
        }
        Err(format!(
            "could not join group {} in {JOIN_ATTEMPTS_MAX} attempts",
            self.group
        ))
    }

    /// One JoinGroup and SyncGroup round; `None` when it must be tried again.
    fn try_join(&mut self, bootstrap: &mut Client) -> Result<Option<Vec<i32>>, String> {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(s(&self.member_id))
            .with_protocol_type(s(PROTOCOL_TYPE))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s(ASSIGNOR))
                .with_metadata(subscription(&self.topic)?)]);
        let joined: JoinGroupResponse =
            self.coordinator
                .call_within(ApiKey::JoinGroup, &req, REBALANCE_WAIT)?;
        match joined.error_code {
            0 => {}
            e if e == ResponseError::MemberIdRequired.code() => {
                self.member_id = joined.member_id.to_string();
                return Ok(None);
            }
            e if e == ResponseError::UnknownMemberId.code() => {
                self.member_id.clear();
                return Ok(None);
            }
            e => check(e, &format!("JoinGroup {}", self.group))?,
        }
        if let Some(name) = &joined.protocol_name {
            if name.as_str() != ASSIGNOR {
                return Err(format!(
                    "group {} chose protocol {name}; sluice consume assigns only with {ASSIGNOR}",
                    self.group
                ));
            }
        }
        self.member_id = joined.member_id.to_string();
        self.generation_id = joined.generation_id;
        let assignments = if joined.leader == joined.member_id {
            leader_assignments(bootstrap, &joined.members)?
        } else {
            Vec::new()
        };
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(self.generation_id)
            .with_member_id(s(&self.member_id))
            .with_protocol_type(Some(s(PROTOCOL_TYPE)))
            .with_protocol_name(Some(s(ASSIGNOR)))
            .with_assignments(assignments);
        let synced: SyncGroupResponse =
            self.coordinator
                .call_within(ApiKey::SyncGroup, &req, REBALANCE_WAIT)?;
        match synced.error_code {
            0 => {}
            e if e == ResponseError::RebalanceInProgress.code()
                || e == ResponseError::IllegalGeneration.code() =>
            {
                return Ok(None)
            }
            e if e == ResponseError::UnknownMemberId.code() => {
                self.member_id.clear();
                return Ok(None);
            }
            e => check(e, &format!("SyncGroup {}", self.group))?,
        }
        let assigned = assigned_partitions(&synced.assignment).ok_or_else(|| {
            format!(
                "group {}: the leader's assignment is not a consumer assignment",
                self.group
            )
        })?;
        let mut partitions: Vec<i32> = assigned
            .into_iter()
            .filter(|(t, _)| *t == self.topic)
            .flat_map(|(_, ps)| ps)
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        Ok(Some(partitions))
    }

    /// Until the next heartbeat is due.
    pub fn until_heartbeat(&self) -> Duration {
        self.next_heartbeat
            .saturating_duration_since(Instant::now())
    }

    /// Sends a heartbeat if one is due.
    pub fn heartbeat(&mut self) -> Result<Heartbeat, String> {
        if Instant::now() < self.next_heartbeat {
            return Ok(Heartbeat::Continue);
        }
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(self.generation_id)
            .with_member_id(s(&self.member_id));
        let resp: HeartbeatResponse = self.coordinator.call(ApiKey::Heartbeat, &req)?;
        self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
        match resp.error_code {
            0 => Ok(Heartbeat::Continue),
            e if e == ResponseError::RebalanceInProgress.code()
                || e == ResponseError::IllegalGeneration.code() =>
            {
                Ok(Heartbeat::Rejoin)
            }
            e if e == ResponseError::UnknownMemberId.code() => {
                self.member_id.clear();
                Ok(Heartbeat::Rejoin)
            }
            e => check(e, &format!("Heartbeat {}", self.group)).map(|()| Heartbeat::Continue),
        }
    }

    /// The group's committed offsets for `partitions` of our topic; partitions without one
    /// are left out.
    pub fn committed(&mut self, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, String> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(&self.topic)))
                .with_partition_indexes(partitions.to_vec())]));
        let resp: OffsetFetchResponse = self.coordinator.call(ApiKey::OffsetFetch, &req)?;
        check(resp.error_code, &format!("OffsetFetch {}", self.group))?;
        let mut out = BTreeMap::new();
        for t in resp.topics.iter().filter(|t| t.name.as_str() == self.topic) {
            for p in &t.partitions {
                check(
                    p.error_code,
                    &format!("OffsetFetch {}-{}", self.topic, p.partition_index),
                )?;
                if p.committed_offset >= 0 && partitions.contains(&p.partition_index) {
                    out.insert(p.partition_index, p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// Commits `offsets` (the next offset to read, per partition of our topic) for this
    /// generation. `Ok(false)` when the coordinator refused because the group has moved to
    /// another generation: whoever reads those partitions next starts from the previous
    /// commit, so some records will be read twice.
    pub fn commit(&mut self, offsets: &BTreeMap<i32, i64>) -> Result<bool, String> {
        if offsets.is_empty() {
            return Ok(true);
        }
        let partitions = offsets
            .iter()
            .map(|(p, o)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(StrBytes::default()))
            })
            .collect();
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id_or_member_epoch(self.generation_id)
            .with_member_id(s(&self.member_id))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(&self.topic)))
                .with_partitions(partitions)]);
        let resp: OffsetCommitResponse = self.coordinator.call(ApiKey::OffsetCommit, &req)?;
        let moved_on = [
            ResponseError::RebalanceInProgress.code(),
            ResponseError::IllegalGeneration.code(),
            ResponseError::UnknownMemberId.code(),
        ];
        let mut committed = true;
        for t in &resp.topics {
            for p in &t.partitions {
                if moved_on.contains(&p.error_code) {
                    committed = false;
                    continue;
                }
                check(
                    p.error_code,
                    &format!("OffsetCommit {}-{}", t.name.as_str(), p.partition_index),
                )?;
            }
        }
        Ok(committed)
    }

    /// Leaves the group, so that it rebalances now rather than after our session times out.
    pub fn leave(&mut self) -> Result<(), String> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&self.member_id))
            ]);
        let resp: LeaveGroupResponse = self.coordinator.call(ApiKey::LeaveGroup, &req)?;
        check(resp.error_code, &format!("LeaveGroup {}", self.group))?;
        for m in &resp.members {
            if m.error_code != ResponseError::UnknownMemberId.code() {
                check(m.error_code, &format!("LeaveGroup {}", self.group))?;
            }
        }
        self.member_id.clear();
        Ok(())
    }
}

/// The consumer protocol subscription to one topic. A topic name too long for the format
/// (given on the command line) is an error.
fn subscription(topic: &str) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    out.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![s(topic)])
        .encode(&mut out, 0)
        .map_err(|e| format!("cannot encode a subscription to {topic}: {e}"))?;
    Ok(out.freeze())
}

/// The consumer protocol assignment of `partitions` per topic.
fn assignment(partitions: &BTreeMap<String, Vec<i32>>) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    out.put_i16(0);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(
            partitions
                .iter()
                .map(|(t, ps)| {
                    TopicPartition::default()
                        .with_topic(TopicName(s(t)))
                        .with_partitions(ps.clone())
                })
                .collect(),
        )
        .encode(&mut out, 0)
        .map_err(|e| format!("cannot encode an assignment: {e}"))?;
    Ok(out.freeze())
}

/// As the leader: every member's share of the partitions of the topics they subscribe to.
fn leader_assignments(
    bootstrap: &mut Client,
    members: &[JoinGroupResponseMember],
) -> Result<Vec<SyncGroupRequestAssignment>, String> {
    let mut subscriptions = BTreeMap::new();
    for m in members {
        let topics = subscribed_topics(&m.metadata).ok_or_else(|| {
            format!(
                "member {}'s metadata is not a consumer subscription",
                m.member_id.as_str()
            )
        })?;
        subscriptions.insert(m.member_id.to_string(), topics);
    }
    let topics: BTreeSet<&str> = subscriptions
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    let topics: Vec<&str> = topics.into_iter().collect();
    let meta = metadata(bootstrap, Some(&topics), false)?;
    // A topic that does not exist (yet) has nothing to assign.
    let partitions: BTreeMap<String, Vec<i32>> = meta
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .filter_map(|t| {
            let name = t.name.as_ref()?.to_string();
            let ids: BTreeSet<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            Some((name, ids.into_iter().collect()))
        })
        .collect();
    range_assign(&subscriptions, &partitions)
        .into_iter()
        .map(|(member, assigned)| {
            Ok(SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(assignment(&assigned)?))
        })
        .collect()
}

/// Kafka's range assignor: for each topic, its partitions in order are cut into as many
/// contiguous ranges as there are members subscribed to it, taken in member id order; the
/// first `partitions % members` ranges are one partition longer. Every member appears in the
/// result, with nothing if there is nothing for it.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, Vec<i32>>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = subscriptions
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for (topic, ids) in partitions {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let (each, extra) = (ids.len() / members.len(), ids.len() % members.len());
        let mut rest = ids.as_slice();
        for (i, member) in members.into_iter().enumerate() {
            let (share, after) = rest.split_at(each + usize::from(i < extra));
            rest = after;
            if !share.is_empty() {
                out.get_mut(member)
                    .expect("every member has an entry")
                    .insert(topic.clone(), share.to_vec());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        members
            .iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_the_first_members_one_more() {
        let partitions = BTreeMap::from([
            ("a".to_string(), (0..5).collect::<Vec<i32>>()),
            ("b".to_string(), vec![0, 1]),
        ]);
        let out = range_assign(
            &subs(&[("m2", &["a", "b"]), ("m1", &["a", "b"]), ("m3", &["a"])]),
            &partitions,
        );
        let got = |m: &str, t: &str| out[m].get(t).cloned().unwrap_or_default();
        assert_eq!(
            (got("m1", "a"), got("m2", "a"), got("m3", "a")),
            (vec![0, 1], vec![2, 3], vec![4])
        );
        assert_eq!((got("m1", "b"), got("m2", "b")), (vec![0], vec![1]));
        assert!(!out["m3"].contains_key("b"));
    }

    #[test]
    fn members_beyond_the_partition_count_get_an_empty_assignment() {
        let partitions = BTreeMap::from([("a".to_string(), vec![0])]);
        let out = range_assign(&subs(&[("m1", &["a"]), ("m2", &["a"])]), &partitions);
        assert_eq!(out["m1"]["a"], vec![0]);
        assert!(out["m2"].is_empty());
        // Encoded, the empty one still reads back as an assignment (of nothing).
        assert_eq!(
            assigned_partitions(&assignment(&out["m2"]).unwrap()),
            Some(vec![])
        );
    }

    #[test]
    fn encoded_subscription_and_assignment_read_back() {
        assert_eq!(
            subscribed_topics(&subscription("orders").unwrap()),
            Some(vec!["orders".to_string()])
        );
        let assigned = BTreeMap::from([("orders".to_string(), vec![1, 3])]);
        assert_eq!(
            assigned_partitions(&assignment(&assigned).unwrap()),
            Some(vec![("orders".to_string(), vec![1, 3])])
        );
    }
}
