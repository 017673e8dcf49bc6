//! `sluice groups`: list, describe and reset the offsets of consumer groups on a running
//! broker, over the Kafka protocol. Every request goes to the one broker given, which is
//! coordinator and leader of everything on a single node; it does not route by
//! FindCoordinator or partition leadership as a multi-broker Kafka cluster would need.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_group::subscription::assigned_partitions;

use crate::client::Client;

#[derive(clap::Args)]
pub struct GroupsArgs {
    /// A broker of the cluster, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    bootstrap: String,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(clap::Subcommand)]
enum GroupsCommand {
    /// List groups with their state and protocol type.
    List {
        /// Only groups in this state (Empty, Stable, PreparingRebalance, …); repeatable.
        #[arg(long)]
        state: Vec<String>,
    },
    /// Members, their assignments, and per partition the committed offset, the log end
    /// offset and the lag.
    Describe { group: String },
    /// Set a group's committed offsets for a topic. Refused while the group has members.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        target: ResetTarget,
        /// Print the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct ResetTarget {
    /// The log start offset of each partition.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset of each partition.
    #[arg(long)]
    to_latest: bool,
    /// The first offset whose timestamp is at or after this time (milliseconds since the
    /// epoch); the log end where there is none.
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
    /// This offset in every partition, clamped to the log's range.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(crate) fn check(code: i16, what: &str) -> Result<(), String> {
    if code == 0 {
        return Ok(());
    }
    let name = kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error {code}"));
    Err(format!("{what}: {name}"))
}

pub fn run(args: GroupsArgs) -> Result<(), String> {
    let mut client = Client::connect(&args.bootstrap)?;
    match args.command {
        GroupsCommand::List { state } => list(&mut client, state),
        GroupsCommand::Describe { group } => describe(&mut client, &group),
        GroupsCommand::ResetOffsets {
            group,
            topic,
            target,
            dry_run,
        } => reset_offsets(&mut client, &group, &topic, &target, dry_run),
    }
}

fn list(client: &mut Client, states: Vec<String>) -> Result<(), String> {
    let req =
        ListGroupsRequest::default().with_states_filter(states.iter().map(|v| s(v)).collect());
    let resp: ListGroupsResponse = client.call(ApiKey::ListGroups, 4, &req)?;
    check(resp.error_code, "ListGroups")?;
    let rows: Vec<Vec<String>> = resp
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group_id.to_string(),
                g.group_state.to_string(),
                g.protocol_type.to_string(),
            ]
        })
        .collect();
    print_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], rows);
    Ok(())
}

fn describe_group(
    client: &mut Client,
    group: &str,
) -> Result<describe_groups_response::DescribedGroup, String> {
    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
    let resp: DescribeGroupsResponse = client.call(ApiKey::DescribeGroups, 5, &req)?;
    let g = resp
        .groups
        .into_iter()
        .next()
        .ok_or("DescribeGroups: empty response")?;
    check(g.error_code, "DescribeGroups")?;
    Ok(g)
}

/// Committed offsets of a group: (topic, partition) → offset.
fn committed(client: &mut Client, group: &str) -> Result<BTreeMap<(String, i32), i64>, String> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(None);
    let resp: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 7, &req)?;
    check(resp.error_code, "OffsetFetch")?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            check(p.error_code, "OffsetFetch")?;
            if p.committed_offset >= 0 {
                out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// ListOffsets for every partition in `partitions` at `timestamp` (-1 latest, -2 earliest).
/// Partitions the broker answers with an error are left out when `lenient` (a deleted topic
/// in a description), and fail the call otherwise.
pub(crate) fn list_offsets(
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
    let resp: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &req)?;
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

fn describe(client: &mut Client, group: &str) -> Result<(), String> {
    let g = describe_group(client, group)?;
    println!(
        "group {group}: state {}, protocol {} {}",
        g.group_state.as_str(),
        g.protocol_type.as_str(),
        g.protocol_data.as_str()
    );
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut members = Vec::new();
    for m in &g.members {
        let assigned = if g.protocol_type.as_str() == "consumer" {
            assigned_partitions(&m.member_assignment)
        } else {
            None
        };
        let text = match &assigned {
            Some(topics) => topics
                .iter()
                .map(|(t, ps)| format!("{t}{ps:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            None => format!("{} bytes", m.member_assignment.len()),
        };
        for (t, ps) in assigned.unwrap_or_default() {
            for p in ps {
                owner.insert((t.clone(), p), m.member_id.to_string());
            }
        }
        members.push(vec![
            m.member_id.to_string(),
            m.group_instance_id
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            m.client_id.to_string(),
            m.client_host.to_string(),
            text,
        ]);
    }
    if !members.is_empty() {
        println!();
        print_table(
            &["MEMBER", "INSTANCE", "CLIENT-ID", "HOST", "ASSIGNMENT"],
            members,
        );
    }
    let committed = committed(client, group)?;
    let partitions: BTreeSet<(String, i32)> =
        committed.keys().chain(owner.keys()).cloned().collect();
    if partitions.is_empty() {
        return Ok(());
    }
    let ends = list_offsets(client, &partitions, -1, true)?;
    let rows = partitions
        .iter()
        .map(|tp| {
            let end = ends.get(tp).copied();
            let committed = committed.get(tp).copied();
            let lag = match (committed, end) {
                (Some(c), Some(e)) => (e - c).max(0).to_string(),
                _ => "-".into(),
            };
            vec![
                tp.0.clone(),
                tp.1.to_string(),
                committed.map_or("-".into(), |c| c.to_string()),
                end.map_or("-".into(), |e| e.to_string()),
                lag,
                owner.get(tp).cloned().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!();
    print_table(
        &[
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "LOG-END",
            "LAG",
            "MEMBER",
        ],
        rows,
    );
    Ok(())
}

fn reset_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    target: &ResetTarget,
    dry_run: bool,
) -> Result<(), String> {
    let g = describe_group(client, group)?;
    if !matches!(g.group_state.as_str(), "Empty" | "Dead") {
        return Err(format!(
            "group {group} is {} with {} member(s): stop its consumers before resetting offsets",
            g.group_state.as_str(),
            g.members.len()
        ));
    }
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))
        ]))
        .with_allow_auto_topic_creation(false);
    let meta: MetadataResponse = client.call(ApiKey::Metadata, 9, &req)?;
    let t = meta.topics.first().ok_or("Metadata: empty response")?;
    check(t.error_code, &format!("topic {topic}"))?;
    let partitions: BTreeSet<(String, i32)> = t
        .partitions
        .iter()
        .map(|p| (topic.to_string(), p.partition_index))
        .collect();
    let earliest = list_offsets(client, &partitions, -2, false)?;
    let latest = list_offsets(client, &partitions, -1, false)?;
    let bounds = |tp: &(String, i32)| -> Result<(i64, i64), String> {
        match (earliest.get(tp), latest.get(tp)) {
            (Some(&lo), Some(&hi)) => Ok((lo, hi)),
            _ => Err(format!("ListOffsets did not answer for {}-{}", tp.0, tp.1)),
        }
    };
    let targets: BTreeMap<(String, i32), i64> = match (target.to_timestamp, target.to_offset) {
        _ if target.to_earliest => earliest.clone(),
        _ if target.to_latest => latest.clone(),
        (Some(ts), _) => list_offsets(client, &partitions, ts, false)?
            .into_iter()
            .map(|(tp, o)| {
                let o = if o < 0 { bounds(&tp)?.1 } else { o };
                Ok((tp, o))
            })
            .collect::<Result<_, String>>()?,
        (None, Some(offset)) => partitions
            .iter()
            .map(|tp| {
                let (lo, hi) = bounds(tp)?;
                Ok((tp.clone(), offset.clamp(lo, hi)))
            })
            .collect::<Result<_, String>>()?,
        (None, None) => return Err("no reset target".into()),
    };
    if !dry_run {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(
                    targets
                        .iter()
                        .map(|((_, p), o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_leader_epoch(-1)
                        })
                        .collect(),
                )]);
        let resp: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, &req)?;
        for t in &resp.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    &format!("OffsetCommit {}-{}", t.name.as_str(), p.partition_index),
                )?;
            }
        }
    }
    let rows = targets
        .iter()
        .map(|((t, p), o)| vec![t.clone(), p.to_string(), o.to_string()])
        .collect();
    print_table(&["TOPIC", "PARTITION", "NEW-OFFSET"], rows);
    if dry_run {
        println!("(dry run: nothing committed)");
    }
    Ok(())
}

pub(crate) fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
