//! `sluice cluster`: what a Metadata request tells about the cluster: its id, the controller,
//! the brokers, and how many topics and partitions it holds.

use serde_json::Value;

use crate::output::{print_json, OutputArgs, OutputFormat, Table};
use crate::requests::{metadata, BrokerArgs};

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
    match args.output.output {
        OutputFormat::Table => {
            cluster.print(OutputFormat::Table);
            println!();
            brokers.print(OutputFormat::Table);
        }
        OutputFormat::Json => {
            let mut object = cluster.objects().remove(0);
            object.insert("brokers".into(), brokers.to_json());
            print_json(&Value::Object(object));
        }
    }
    Ok(())
}
