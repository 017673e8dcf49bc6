//! `sluice cluster`: what a Metadata request tells about the cluster (its id, the controller,
//! the brokers, how many topics and partitions it holds), and what DescribeQuorum tells about
//! the metadata quorum (its leader, epoch, high watermark and each voter's log end); and the
//! operator's changes to where partitions live: reassignments (AlterPartitionReassignments,
//! ListPartitionReassignments) and leader elections (ElectLeaders), as Kafka's
//! `kafka-reassign-partitions.sh` and `kafka-leader-election.sh` make them.

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_quorum_response::PartitionData;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::*;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{print_json, report, Cell, OutputArgs, OutputFormat, Table};
use crate::requests::{check, check_with, describe_quorum, metadata, s, BrokerArgs};

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(subcommand)]
    command: Option<ClusterCommand>,
}

#[derive(clap::Subcommand)]
enum ClusterCommand {
    /// The cluster id, the controller, the brokers and the metadata quorum (the default).
    Status {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Move partitions to other brokers, or cancel such moves. The added replicas catch up
    /// and join the ISR before the others leave; `reassignments` shows what is moving.
    Reassign {
        /// A partition and its new replicas, the first preferred as leader, e.g.
        /// orders:0=4,2,3; repeatable.
        #[arg(long = "move", value_name = "TOPIC:PARTITION=BROKERS")]
        moves: Vec<String>,
        /// A partition whose reassignment to cancel, e.g. orders:0; repeatable.
        #[arg(long = "cancel", value_name = "TOPIC:PARTITION")]
        cancels: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Partitions being reassigned, with the replicas being added and removed.
    Reassignments {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Elect leaders: each partition's preferred (first) replica, or with --unclean any
    /// live replica of a partition that has no leader.
    ElectLeaders {
        /// A partition, e.g. orders:0; repeatable. Every partition when none is given.
        #[arg(long = "partition", value_name = "TOPIC:PARTITION")]
        partitions: Vec<String>,
        /// Unclean election: may lose committed records.
        #[arg(long)]
        unclean: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub fn run(args: ClusterArgs) -> Result<(), String> {
    let mut client = args.broker.connect()?;
    match args.command {
        None => status(&mut client, args.output.output),
        Some(ClusterCommand::Status { output }) => status(&mut client, output.output),
        Some(ClusterCommand::Reassign {
            moves,
            cancels,
            output,
        }) => reassign(&mut client, &moves, &cancels, output.output),
        Some(ClusterCommand::Reassignments { output }) => reassignments(&mut client, output.output),
        Some(ClusterCommand::ElectLeaders {
            partitions,
            unclean,
            output,
        }) => elect_leaders(&mut client, &partitions, unclean, output.output),
    }
}

/// `TOPIC:PARTITION`.
fn topic_partition(text: &str) -> Result<(String, i32), String> {
    let (topic, partition) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text}: expected TOPIC:PARTITION"))?;
    let partition = partition
        .trim()
        .parse()
        .map_err(|_| format!("{text}: the partition is not a number"))?;
    Ok((topic.trim().to_string(), partition))
}

/// `TOPIC:PARTITION=B1,B2,...`.
fn a_move(text: &str) -> Result<(String, i32, Vec<i32>), String> {
    let (at, brokers) = text
        .split_once('=')
        .ok_or_else(|| format!("{text}: expected TOPIC:PARTITION=BROKERS"))?;
    let (topic, partition) = topic_partition(at)?;
    let brokers = brokers
        .split(',')
        .map(|b| b.trim().parse::<i32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{text}: the brokers are not numbers"))?;
    Ok((topic, partition, brokers))
}

fn reassign(
    client: &mut Client,
    moves: &[String],
    cancels: &[String],
    format: OutputFormat,
) -> Result<(), String> {
    let mut wanted: Vec<(String, i32, Option<Vec<i32>>)> = Vec::new();
    for m in moves {
        let (t, p, brokers) = a_move(m)?;
        wanted.push((t, p, Some(brokers)));
    }
    for c in cancels {
        let (t, p) = topic_partition(c)?;
        wanted.push((t, p, None));
    }
    if wanted.is_empty() {
        return Err("name at least one --move or --cancel".into());
    }
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for (t, p, brokers) in &wanted {
        let partition = ReassignablePartition::default()
            .with_partition_index(*p)
            .with_replicas(
                brokers
                    .as_ref()
                    .map(|b| b.iter().map(|&id| BrokerId(id)).collect()),
            );
        match topics.iter_mut().find(|x| x.name.as_str() == t) {
            Some(x) => x.partitions.push(partition),
            None => topics.push(
                ReassignableTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(topics);
    let resp: AlterPartitionReassignmentsResponse =
        client.call(ApiKey::AlterPartitionReassignments, &req)?;
    check_with(resp.error_code, &resp.error_message, "reassign")?;
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for t in &resp.responses {
        for p in &t.partitions {
            let at = format!("{}:{}", t.name.as_str(), p.partition_index);
            match check_with(p.error_code, &p.error_message, &at) {
                Ok(()) => done.push(at),
                Err(e) => failures.push(e),
            }
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    report(
        format,
        format!("reassignment started or cancelled: {}", done.join(", ")),
        json!({ "partitions": done }),
    );
    Ok(())
}

fn reassignments(client: &mut Client, format: OutputFormat) -> Result<(), String> {
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(None);
    let resp: ListPartitionReassignmentsResponse =
        client.call(ApiKey::ListPartitionReassignments, &req)?;
    check_with(resp.error_code, &resp.error_message, "list reassignments")?;
    let ids = |v: &[BrokerId]| {
        v.iter()
            .map(|b| b.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut table = Table::new(&["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"]);
    for t in &resp.topics {
        for p in &t.partitions {
            table.push(vec![
                t.name.to_string().into(),
                p.partition_index.into(),
                ids(&p.replicas).into(),
                ids(&p.adding_replicas).into(),
                ids(&p.removing_replicas).into(),
            ]);
        }
    }
    table.print(format);
    Ok(())
}

fn elect_leaders(
    client: &mut Client,
    partitions: &[String],
    unclean: bool,
    format: OutputFormat,
) -> Result<(), String> {
    let named = if partitions.is_empty() {
        None
    } else {
        let mut topics: Vec<TopicPartitions> = Vec::new();
        for text in partitions {
            let (t, p) = topic_partition(text)?;
            match topics.iter_mut().find(|x| x.topic.as_str() == t) {
                Some(x) => x.partitions.push(p),
                None => topics.push(
                    TopicPartitions::default()
                        .with_topic(TopicName(s(&t)))
                        .with_partitions(vec![p]),
                ),
            }
        }
        Some(topics)
    };
    let req = ElectLeadersRequest::default()
        .with_election_type(i8::from(unclean))
        .with_topic_partitions(named)
        .with_timeout_ms(30_000);
    let resp: ElectLeadersResponse = client.call(ApiKey::ElectLeaders, &req)?;
    check(resp.error_code, "elect leaders")?;
    let mut table = Table::new(&["TOPIC", "PARTITION", "RESULT"]);
    for t in &resp.replica_election_results {
        for p in &t.partition_result {
            // ELECTION_NOT_NEEDED: the preferred replica leads already.
            let result = match p.error_code {
                0 => "elected".to_string(),
                84 => "already led by its preferred replica".to_string(),
                code => check_with(code, &p.error_message, "")
                    .err()
                    .unwrap_or_default()
                    .trim_start_matches(": ")
                    .to_string(),
            };
            table.push(vec![
                t.topic.to_string().into(),
                p.partition_id.into(),
                result.into(),
            ]);
        }
    }
    table.print(format);
    Ok(())
}

fn status(client: &mut Client, format: OutputFormat) -> Result<(), String> {
    let meta = metadata(client, None, false)?;
    let partitions: usize = meta.topics.iter().map(|t| t.partitions.len()).sum();
    let internal = meta.topics.iter().filter(|t| t.is_internal).count();
    let mut cluster = Table::new(&[
        "CLUSTER-ID",
        "CONTROLLER-ID",
        "BROKERS",
        "TOPICS",
        "INTERNAL-TOPICS",
        "PARTITIONS",
    ]);
    cluster.push(vec![
        meta.cluster_id.as_ref().map(|c| c.to_string()).into(),
        meta.controller_id.0.into(),
        meta.brokers.len().into(),
        meta.topics.len().into(),
        internal.into(),
        partitions.into(),
    ]);
    let mut brokers = Table::new(&["NODE-ID", "HOST", "PORT", "RACK"]);
    let mut nodes: Vec<_> = meta.brokers.iter().collect();
    nodes.sort_by_key(|b| b.node_id.0);
    for b in nodes {
        brokers.push(vec![
            b.node_id.0.into(),
            b.host.to_string().into(),
            b.port.into(),
            b.rack.as_ref().map(|r| r.to_string()).into(),
        ]);
    }
    // A broker without a metadata quorum (Kafka before 3.3, say) answers with an error:
    // the rest is still printed, and the quorum is left out.
    let quorum = match describe_quorum(client) {
        Ok(quorum) => Some(quorum_tables(&quorum)),
        Err(e) => {
            eprintln!("sluice: no quorum description: {e}");
            None
        }
    };
    match format {
        OutputFormat::Table => {
            cluster.print(OutputFormat::Table);
            println!();
            brokers.print(OutputFormat::Table);
            if let Some((quorum, voters)) = &quorum {
                println!();
                quorum.print(OutputFormat::Table);
                println!();
                voters.print(OutputFormat::Table);
            }
        }
        OutputFormat::Json => {
            let mut object = cluster.objects().remove(0);
            object.insert("brokers".into(), brokers.to_json());
            let quorum = quorum.map_or(Value::Null, |(quorum, voters)| {
                let mut q = quorum.objects().remove(0);
                q.insert("voters".into(), voters.to_json());
                Value::Object(q)
            });
            object.insert("quorum".into(), quorum);
            print_json(&Value::Object(object));
        }
    }
    Ok(())
}

/// The quorum's leader, epoch and high watermark, and one row per voter.
fn quorum_tables(quorum: &PartitionData) -> (Table, Table) {
    let mut table = Table::new(&["QUORUM-LEADER-ID", "LEADER-EPOCH", "HIGH-WATERMARK"]);
    table.push(vec![
        quorum.leader_id.0.into(),
        quorum.leader_epoch.into(),
        quorum.high_watermark.into(),
    ]);
    let mut voters = Table::new(&["VOTER-ID", "LOG-END-OFFSET", "LAG", "STATUS"]);
    let leader_end = quorum
        .current_voters
        .iter()
        .find(|v| v.replica_id == quorum.leader_id)
        .map_or(0, |v| v.log_end_offset);
    for v in &quorum.current_voters {
        let lag: Cell = if v.log_end_offset < 0 {
            Cell::none()
        } else {
            (leader_end - v.log_end_offset).max(0).into()
        };
        let status = if v.replica_id == quorum.leader_id {
            "Leader"
        } else {
            "Follower"
        };
        voters.push(vec![
            v.replica_id.0.into(),
            v.log_end_offset.into(),
            lag,
            status.into(),
        ]);
    }
    (table, voters)
}
