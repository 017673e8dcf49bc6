//! What every operator command needs: the broker to talk to, Kafka error codes as messages,
//! and the Metadata and ListOffsets requests several commands make. Every request goes to the
//! one broker given, which leads every partition on a single node; the CLI does not route by
//! partition leadership as a multi-broker Kafka cluster would need.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::client::Client;

/// ListOffsets timestamp for the log end offset.
pub const LATEST: i64 = -1;
/// ListOffsets timestamp for the log start offset.
pub const EARLIEST: i64 = -2;

/// How often a topic that a broker reports as still being created is asked about again.
const METADATA_ATTEMPTS_MAX: u32 = 10;
const METADATA_RETRY_BACKOFF: Duration = Duration::from_millis(200);

#[derive(clap::Args)]
pub struct BrokerArgs {
    /// A broker of the cluster, HOST:PORT.
    #[arg(
        long,
        visible_alias = "bootstrap-server",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
}

impl BrokerArgs {
    pub fn connect(&self) -> Result<Client, String> {
        Client::connect(&self.bootstrap)
    }
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// `Ok` for error code 0, else `what: ERROR_NAME` (Kafka's name, as the broker's metrics and
/// admin API print it).
pub fn check(code: i16, what: &str) -> Result<(), String> {
    if code == 0 {
        return Ok(());
    }
    Err(format!("{what}: {}", sluice_protocol::error_name(code)))
}

/// [`check`], with the broker's message, if any, after the error name.
pub fn check_with(code: i16, message: &Option<StrBytes>, what: &str) -> Result<(), String> {
    check(code, what).map_err(|e| match message {
        Some(m) => format!("{e} ({})", m.as_str()),
        None => e,
    })
}

/// The metadata quorum as its leader describes it (DescribeQuorum, which a broker forwards).
pub fn describe_quorum(
    client: &mut Client,
) -> Result<kafka_protocol::messages::describe_quorum_response::PartitionData, String> {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let req = kafka_protocol::messages::DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(s("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ]);
    let resp: kafka_protocol::messages::DescribeQuorumResponse =
        client.call(ApiKey::DescribeQuorum, &req)?;
    check(resp.error_code, "describe quorum")?;
    let partition = resp
        .topics
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .ok_or("describe quorum: an answer without the metadata log")?;
    check(partition.error_code, "describe quorum")?;
    Ok(partition)
}

/// Metadata for `topics`, or for every topic when `None`.
pub fn metadata(
    client: &mut Client,
    topics: Option<&[&str]>,
    allow_auto_topic_creation: bool,
) -> Result<MetadataResponse, String> {
    let topics = topics.map(|ts| {
        ts.iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(s(t)))))
            .collect()
    });
    let req = MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(allow_auto_topic_creation);
    client.call(ApiKey::Metadata, &req)
}

/// The metadata of one topic, checked for errors. A broker answers LEADER_NOT_AVAILABLE
/// (Kafka 3 with ZooKeeper) or UNKNOWN_TOPIC_OR_PARTITION (Kafka 4, Sluice) while a topic it
/// is auto-creating does not exist yet: with auto-creation allowed, that is asked again a few
/// times.
pub fn topic_metadata(
    client: &mut Client,
    topic: &str,
    allow_auto_topic_creation: bool,
) -> Result<MetadataResponseTopic, String> {
    let leader_not_available = ResponseError::LeaderNotAvailable.code();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let meta = metadata(client, Some(&[topic]), allow_auto_topic_creation)?;
        let t = meta
            .topics
            .into_iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
            .ok_or_else(|| format!("Metadata: no answer for topic {topic}"))?;
        let being_created = allow_auto_topic_creation
            && t.error_code == ResponseError::UnknownTopicOrPartition.code();
        let waiting = being_created
            || t.error_code == leader_not_available
            || t.partitions
                .iter()
                .any(|p| p.error_code == leader_not_available);
        if waiting && attempt < METADATA_ATTEMPTS_MAX {
            std::thread::sleep(METADATA_RETRY_BACKOFF);
            continue;
        }
        check(t.error_code, &format!("topic {topic}"))?;
        for p in &t.partitions {
            check(
                p.error_code,
                &format!("topic {topic} partition {}", p.partition_index),
            )?;
        }
        return Ok(t);
    }
}

/// The partition ids of a topic, in order. A topic without partitions is an error: nothing
/// could be written to or read from it.
pub fn partition_ids(topic: &MetadataResponseTopic) -> Result<Vec<i32>, String> {
    let ids: BTreeSet<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
    if ids.is_empty() {
        let name = topic.name.as_ref().map_or("", |n| n.as_str());
        return Err(format!("topic {name} has no partitions"));
    }
    Ok(ids.into_iter().collect())
}

/// ListOffsets for every partition in `partitions` at `timestamp` ([`LATEST`], [`EARLIEST`]
/// or milliseconds since the epoch). Partitions the broker answers with an error are left out
/// when `lenient` (a deleted topic in a description), and fail the call otherwise.
pub fn list_offsets(
    client: &mut Client,
    partitions: &BTreeSet<(String, i32)>,
    timestamp: i64,
    lenient: bool,
) -> Result<BTreeMap<(String, i32), i64>, String> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            ListOffsetsTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )
        })
        .collect();
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(topics);
    let resp: ListOffsetsResponse = client.call(ApiKey::ListOffsets, &req)?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if lenient && p.error_code != 0 {
                continue;
            }
            check(
                p.error_code,
                &format!("ListOffsets {}-{}", t.name.as_str(), p.partition_index),
            )?;
            out.insert((t.name.to_string(), p.partition_index), p.offset);
        }
    }
    Ok(out)
}

/// [`list_offsets`] for some partitions of one topic, every one of which must be answered.
pub fn topic_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, String> {
    let wanted: BTreeSet<(String, i32)> =
        partitions.iter().map(|p| (topic.to_string(), *p)).collect();
    let answered = list_offsets(client, &wanted, timestamp, false)?;
    wanted
        .into_iter()
        .map(|tp| {
            let offset = answered
                .get(&tp)
                .copied()
                .ok_or_else(|| format!("ListOffsets did not answer for {}-{}", tp.0, tp.1))?;
            Ok((tp.1, offset))
        })
        .collect()
}

/// `offset` moved into a log's range `[start, end]`. Both bounds come from a broker, which
/// must not be able to make the CLI panic by giving them in the wrong order.
pub fn clamp_offset(offset: i64, start: i64, end: i64) -> Result<i64, String> {
    if start > end {
        return Err(format!(
            "the broker reports log start {start} after log end {end}"
        ));
    }
    Ok(offset.clamp(start, end))
}
