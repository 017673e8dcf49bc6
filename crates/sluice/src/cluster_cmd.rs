//! `sluice cluster`: what a Metadata request tells about the cluster (its id, the controller,
//! the brokers, how many topics and partitions it holds), and what DescribeQuorum tells about
//! the metadata quorum (its leader, epoch, high watermark and each voter's log end).

use kafka_protocol::messages::describe_quorum_response::PartitionData;
use serde_json::Value;

use crate::output::{print_json, Cell, OutputArgs, OutputFormat, Table};
use crate::requests::{describe_quorum, metadata, BrokerArgs};

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: ClusterArgs) -> Result<(), String> {
    let mut client = args.broker.connect()?;
    let meta = metadata(&mut client, None, false)?;
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
    let quorum = match describe_quorum(&mut client) {
        Ok(quorum) => Some(quorum_tables(&quorum)),
        Err(e) => {
            eprintln!("sluice: no quorum description: {e}");
            None
        }
    };
    match args.output.output {
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
