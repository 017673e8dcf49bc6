//! `sluice topics`: create, list, describe, alter and delete topics on a running broker over
//! the Kafka protocol (to the one broker given; see `requests` on routing).

use std::collections::BTreeSet;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use serde_json::{json, Map, Value};

use crate::client::Client;
use crate::output::{print_json, report, OutputArgs, OutputFormat, Table};
use crate::requests::{
    check_with, list_offsets, metadata, s, topic_metadata, BrokerArgs, EARLIEST, LATEST,
};

#[derive(clap::Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(clap::Subcommand)]
enum TopicsCommand {
    /// Topics with their partition counts.
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (the broker's num.partitions if not given).
        #[arg(long)]
        partitions: Option<i32>,
        /// A topic config, e.g. cleanup.policy=compact; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Partitions with their start and end offsets, and the configs that are not defaults.
    Describe {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Change topic configs without a restart.
    Alter {
        name: String,
        /// Set a config; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Return a config to its default; repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

fn key_value(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{pair}: expected KEY=VALUE"))
}

pub fn run(args: TopicsArgs) -> Result<(), String> {
    let mut client = args.broker.connect()?;
    match args.command {
        TopicsCommand::List { output } => list(&mut client, output.output),
        TopicsCommand::Create {
            name,
            partitions,
            configs,
            output,
        } => create(&mut client, &name, partitions, &configs, output.output),
        TopicsCommand::Describe { name, output } => describe(&mut client, &name, output.output),
        TopicsCommand::Alter {
            name,
            set,
            delete,
            output,
        } => alter(&mut client, &name, &set, &delete, output.output),
        TopicsCommand::Delete { name, output } => {
            let req = DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(s(&name))])
                .with_timeout_ms(30_000);
            let resp: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, &req)?;
            for r in &resp.responses {
                check_with(r.error_code, &r.error_message, &format!("deleting {name}"))?;
            }
            report(
                output.output,
                format!("deleted topic {name}"),
                json!({"topic": name, "deleted": true}),
            );
            Ok(())
        }
    }
}

fn list(client: &mut Client, format: OutputFormat) -> Result<(), String> {
    let meta = metadata(client, None, false)?;
    let mut topics: Vec<(String, usize, bool)> = meta
        .topics
        .iter()
        .map(|t| {
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            (name, t.partitions.len(), t.is_internal)
        })
        .collect();
    topics.sort();
    let mut table = Table::new(&["TOPIC", "PARTITIONS", "INTERNAL"]);
    for (name, partitions, internal) in topics {
        table.push(vec![name.into(), partitions.into(), internal.into()]);
    }
    table.print(format);
    Ok(())
}

fn create(
    client: &mut Client,
    name: &str,
    partitions: Option<i32>,
    configs: &[String],
    format: OutputFormat,
) -> Result<(), String> {
    let configs = configs
        .iter()
        .map(|pair| key_value(pair))
        .collect::<Result<Vec<_>, String>>()?;
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions.unwrap_or(-1))
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        );
    let req = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(30_000);
    let resp: CreateTopicsResponse = client.call(ApiKey::CreateTopics, &req)?;
    for t in &resp.topics {
        check_with(t.error_code, &t.error_message, &format!("creating {name}"))?;
        let configs: Map<String, Value> = configs
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        report(
            format,
            format!(
                "created topic {name} with {} partition(s)",
                t.num_partitions
            ),
            json!({
                "topic": name,
                "partitions": t.num_partitions,
                "replication_factor": t.replication_factor,
                "configs": configs,
            }),
        );
    }
    Ok(())
}

fn describe(client: &mut Client, name: &str, format: OutputFormat) -> Result<(), String> {
    let t = topic_metadata(client, name, false)?;
    let partitions: BTreeSet<(String, i32)> = t
        .partitions
        .iter()
        .map(|p| (name.to_string(), p.partition_index))
        .collect();
    let starts = list_offsets(client, &partitions, EARLIEST, false)?;
    let ends = list_offsets(client, &partitions, LATEST, false)?;
    let mut offsets = Table::new(&["PARTITION", "LEADER", "LOG-START", "LOG-END"]);
    for p in &t.partitions {
        let tp = (name.to_string(), p.partition_index);
        offsets.push(vec![
            p.partition_index.into(),
            p.leader_id.0.into(),
            starts.get(&tp).copied().into(),
            ends.get(&tp).copied().into(),
        ]);
    }

    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configuration_keys(None)]);
    let resp: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, &req)?;
    let result = resp
        .results
        .first()
        .ok_or("DescribeConfigs: empty response")?;
    check_with(result.error_code, &result.error_message, "DescribeConfigs")?;
    let mut configs = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
    for c in &result.configs {
        // Sources: 1 dynamic topic config, 4 static broker config, 5 default.
        let source = match c.config_source {
            1 => "topic",
            4 => "broker",
            5 => "default",
            _ => "other",
        };
        configs.push(vec![
            c.name.to_string().into(),
            c.value.as_ref().map(|v| v.to_string()).into(),
            source.into(),
        ]);
    }

    let id = t.topic_id.to_string();
    match format {
        OutputFormat::Table => {
            println!("topic {name} ({id}), {} partition(s)", partitions.len());
            println!();
            offsets.print(format);
            println!();
            configs.print(format);
        }
        OutputFormat::Json => print_json(&serde_json::json!({
            "topic": name,
            "topic_id": id,
            "internal": t.is_internal,
            "partitions": offsets.to_json(),
            "configs": configs.to_json(),
        })),
    }
    Ok(())
}

fn alter(
    client: &mut Client,
    name: &str,
    set: &[String],
    delete: &[String],
    format: OutputFormat,
) -> Result<(), String> {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let mut configs = Vec::new();
    let mut set_json = Map::new();
    for pair in set {
        let (k, v) = key_value(pair)?;
        configs.push(
            AlterableConfig::default()
                .with_name(s(&k))
                .with_config_operation(SET)
                .with_value(Some(s(&v))),
        );
        set_json.insert(k, Value::from(v));
    }
    for k in delete {
        configs.push(
            AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(DELETE),
        );
    }
    if configs.is_empty() {
        return Err("nothing to alter: give --set KEY=VALUE or --delete KEY".into());
    }
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configs(configs),
    ]);
    let resp: IncrementalAlterConfigsResponse =
        client.call(ApiKey::IncrementalAlterConfigs, &req)?;
    for r in &resp.responses {
        check_with(r.error_code, &r.error_message, &format!("altering {name}"))?;
    }
    report(
        format,
        format!("altered topic {name}"),
        json!({"topic": name, "set": set_json, "deleted": delete}),
    );
    Ok(())
}
