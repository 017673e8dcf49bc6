//! `sluice groups`: list, describe and reset the offsets of consumer groups on a running
//! broker, over the Kafka protocol (to the one broker given; see `requests` on routing).

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use sluice_group::subscription::assigned_partitions;

use crate::client::Client;
use crate::output::{print_json, Cell, OutputArgs, OutputFormat, Table};
use crate::requests::{
    check, clamp_offset, list_offsets, partition_ids, s, topic_metadata, BrokerArgs, EARLIEST,
    LATEST,
};

#[derive(clap::Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    broker: BrokerArgs,
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
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Members, their assignments, and per partition the committed offset, the log end
    /// offset and the lag.
    Describe {
        group: String,
        #[command(flatten)]
        output: OutputArgs,
    },
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
        #[command(flatten)]
        output: OutputArgs,
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
    // Negative values are ListOffsets' sentinels (latest, earliest, …), not times.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..))]
    to_timestamp: Option<i64>,
    /// This offset in every partition, clamped to the log's range.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
}

pub fn run(args: GroupsArgs) -> Result<(), String> {
    let mut client = args.broker.connect()?;
    match args.command {
        GroupsCommand::List { state, output } => list(&mut client, state, output.output),
        GroupsCommand::Describe { group, output } => describe(&mut client, &group, output.output),
        GroupsCommand::ResetOffsets {
            group,
            topic,
            target,
            dry_run,
            output,
        } => reset_offsets(&mut client, &group, &topic, &target, dry_run, output.output),
    }
}

fn list(client: &mut Client, states: Vec<String>, format: OutputFormat) -> Result<(), String> {
    let req =
        ListGroupsRequest::default().with_states_filter(states.iter().map(|v| s(v)).collect());
    let resp: ListGroupsResponse = client.call(ApiKey::ListGroups, &req)?;
    check(resp.error_code, "ListGroups")?;
    let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE"]);
    for g in &resp.groups {
        table.push(vec![
            g.group_id.to_string().into(),
            g.group_state.to_string().into(),
            g.protocol_type.to_string().into(),
        ]);
    }
    table.print(format);
    Ok(())
}

fn describe_group(
    client: &mut Client,
    group: &str,
) -> Result<describe_groups_response::DescribedGroup, String> {
    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
    let resp: DescribeGroupsResponse = client.call(ApiKey::DescribeGroups, &req)?;
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
    let resp: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, &req)?;
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

/// A member's assignment: `topic[0, 1] other[3]` in a table, `[{"topic", "partitions"}]` in
/// JSON; its size and `null` when it is not a consumer assignment.
fn assignment_cell(assigned: Option<&[(String, Vec<i32>)]>, bytes: usize) -> Cell {
    match assigned {
        Some(topics) => Cell::new(
            topics
                .iter()
                .map(|(t, ps)| format!("{t}{ps:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            topics
                .iter()
                .map(|(t, ps)| json!({"topic": t, "partitions": ps}))
                .collect(),
        ),
        None => Cell::new(format!("{bytes} bytes"), Value::Null),
    }
}

fn describe(client: &mut Client, group: &str, format: OutputFormat) -> Result<(), String> {
    let g = describe_group(client, group)?;
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut members = Table::new(&["MEMBER", "INSTANCE", "CLIENT-ID", "HOST", "ASSIGNMENT"]);
    for m in &g.members {
        let assigned = if g.protocol_type.as_str() == "consumer" {
            assigned_partitions(&m.member_assignment)
        } else {
            None
        };
        let assignment = assignment_cell(assigned.as_deref(), m.member_assignment.len());
        for (t, ps) in assigned.unwrap_or_default() {
            for p in ps {
                owner.insert((t.clone(), p), m.member_id.to_string());
            }
        }
        members.push(vec![
            m.member_id.to_string().into(),
            m.group_instance_id.as_ref().map(|i| i.to_string()).into(),
            m.client_id.to_string().into(),
            m.client_host.to_string().into(),
            assignment,
        ]);
    }
    let committed = committed(client, group)?;
    let partitions: BTreeSet<(String, i32)> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let ends = if partitions.is_empty() {
        BTreeMap::new()
    } else {
        list_offsets(client, &partitions, LATEST, true)?
    };
    let mut offsets = Table::new(&[
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "LOG-END",
        "LAG",
        "MEMBER",
    ]);
    for tp in &partitions {
        let end = ends.get(tp).copied();
        let committed = committed.get(tp).copied();
        // Both come off the wire: a hostile broker's values must not overflow.
        let lag = end.zip(committed).map(|(e, c)| e.saturating_sub(c).max(0));
        offsets.push(vec![
            tp.0.clone().into(),
            tp.1.into(),
            committed.into(),
            end.into(),
            lag.into(),
            owner.get(tp).cloned().into(),
        ]);
    }
    match format {
        OutputFormat::Table => {
            println!(
                "group {group}: state {}, protocol {} {}",
                g.group_state.as_str(),
                g.protocol_type.as_str(),
                g.protocol_data.as_str()
            );
            if !members.is_empty() {
                println!();
                members.print(format);
            }
            if !offsets.is_empty() {
                println!();
                offsets.print(format);
            }
        }
        OutputFormat::Json => print_json(&json!({
            "group": group,
            "state": g.group_state.as_str(),
            "protocol_type": g.protocol_type.as_str(),
            "protocol": g.protocol_data.as_str(),
            "members": members.to_json(),
            "offsets": offsets.to_json(),
        })),
    }
    Ok(())
}

fn reset_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    target: &ResetTarget,
    dry_run: bool,
    format: OutputFormat,
) -> Result<(), String> {
    let g = describe_group(client, group)?;
    if !matches!(g.group_state.as_str(), "Empty" | "Dead") {
        return Err(format!(
            "group {group} is {} with {} member(s): stop its consumers before resetting offsets",
            g.group_state.as_str(),
            g.members.len()
        ));
    }
    let t = topic_metadata(client, topic, false)?;
    let partitions: BTreeSet<(String, i32)> = partition_ids(&t)?
        .into_iter()
        .map(|p| (topic.to_string(), p))
        .collect();
    let earliest = list_offsets(client, &partitions, EARLIEST, false)?;
    let latest = list_offsets(client, &partitions, LATEST, false)?;
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
                Ok((tp.clone(), clamp_offset(offset, lo, hi)?))
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
        let resp: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, &req)?;
        for t in &resp.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    &format!("OffsetCommit {}-{}", t.name.as_str(), p.partition_index),
                )?;
            }
        }
    }
    let mut table = Table::new(&["TOPIC", "PARTITION", "NEW-OFFSET"]);
    for ((t, p), o) in &targets {
        table.push(vec![t.clone().into(), (*p).into(), (*o).into()]);
    }
    match format {
        OutputFormat::Table => {
            table.print(format);
            if dry_run {
                println!("(dry run: nothing committed)");
            }
        }
        OutputFormat::Json => print_json(&json!({
            "group": group,
            "topic": topic,
            "dry_run": dry_run,
            "offsets": table.to_json(),
        })),
    }
    Ok(())
}
