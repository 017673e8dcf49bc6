//! `sluice topics`: create, list, describe, alter and delete topics on a running broker over
//! the Kafka protocol (to the one broker given; see `groups_cmd` on routing).

use std::collections::BTreeSet;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::groups_cmd::{check, list_offsets, print_table};

#[derive(clap::Args)]
pub struct TopicsArgs {
    /// A broker of the cluster, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    bootstrap: String,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(clap::Subcommand)]
enum TopicsCommand {
    /// Topics with their partition counts.
    List,
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (the broker's num.partitions if not given).
        #[arg(long)]
        partitions: Option<i32>,
        /// A topic config, e.g. cleanup.policy=compact; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Partitions with their start and end offsets, and the configs that are not defaults.
    Describe { name: String },
    /// Change topic configs without a restart.
    Alter {
        name: String,
        /// Set a config; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Return a config to its default; repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn key_value(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{pair}: expected KEY=VALUE"))
}

/// The broker's message, if any, after its error name.
fn check_with(code: i16, message: &Option<StrBytes>, what: &str) -> Result<(), String> {
    check(code, what).map_err(|e| match message {
        Some(m) => format!("{e} ({})", m.as_str()),
        None => e,
    })
}

pub fn run(args: TopicsArgs) -> Result<(), String> {
    let mut client = Client::connect(&args.bootstrap)?;
    match args.command {
        TopicsCommand::List => list(&mut client),
        TopicsCommand::Create {
            name,
            partitions,
            configs,
        } => create(&mut client, &name, partitions, &configs),
        TopicsCommand::Describe { name } => describe(&mut client, &name),
        TopicsCommand::Alter { name, set, delete } => alter(&mut client, &name, &set, &delete),
        TopicsCommand::Delete { name } => {
            let req = DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(s(&name))])
                .with_timeout_ms(30_000);
            let resp: DeleteTopicsResponse = client.call(ApiKey::DeleteTopics, 4, &req)?;
            for r in &resp.responses {
                check_with(r.error_code, &r.error_message, &format!("deleting {name}"))?;
            }
            println!("deleted topic {name}");
            Ok(())
        }
    }
}

fn metadata(client: &mut Client, topic: Option<&str>) -> Result<MetadataResponse, String> {
    let topics =
        topic.map(|t| vec![MetadataRequestTopic::default().with_name(Some(TopicName(s(t))))]);
    let req = MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(false);
    // v12: topic ids, and nullable names.
    client.call(ApiKey::Metadata, 12, &req)
}

fn list(client: &mut Client) -> Result<(), String> {
    let meta = metadata(client, None)?;
    let mut rows: Vec<Vec<String>> = meta
        .topics
        .iter()
        .map(|t| {
            vec![
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                t.partitions.len().to_string(),
                if t.is_internal { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    rows.sort();
    print_table(&["TOPIC", "PARTITIONS", "INTERNAL"], rows);
    Ok(())
}

fn create(
    client: &mut Client,
    name: &str,
    partitions: Option<i32>,
    configs: &[String],
) -> Result<(), String> {
    let configs = configs
        .iter()
        .map(|pair| {
            let (k, v) = key_value(pair)?;
            Ok(CreatableTopicConfig::default()
                .with_name(s(&k))
                .with_value(Some(s(&v))))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions.unwrap_or(-1))
        .with_replication_factor(-1)
        .with_configs(configs);
    let req = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(30_000);
    let resp: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &req)?;
    for t in &resp.topics {
        check_with(t.error_code, &t.error_message, &format!("creating {name}"))?;
        println!(
            "created topic {name} with {} partition(s)",
            t.num_partitions
        );
    }
    Ok(())
}

fn describe(client: &mut Client, name: &str) -> Result<(), String> {
    let meta = metadata(client, Some(name))?;
    let t = meta.topics.first().ok_or("Metadata: empty response")?;
    check(t.error_code, &format!("topic {name}"))?;
    let partitions: BTreeSet<(String, i32)> = t
        .partitions
        .iter()
        .map(|p| (name.to_string(), p.partition_index))
        .collect();
    let starts = list_offsets(client, &partitions, -2, false)?;
    let ends = list_offsets(client, &partitions, -1, false)?;
    let id = t.topic_id;
    println!("topic {name} ({id}), {} partition(s)", partitions.len());
    let leaders: Vec<(i32, i32)> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    let rows = leaders
        .iter()
        .map(|(p, leader)| {
            let tp = (name.to_string(), *p);
            vec![
                p.to_string(),
                leader.to_string(),
                starts.get(&tp).map_or("-".into(), |o| o.to_string()),
                ends.get(&tp).map_or("-".into(), |o| o.to_string()),
            ]
        })
        .collect();
    println!();
    print_table(&["PARTITION", "LEADER", "START", "END"], rows);

    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configuration_keys(None)]);
    let resp: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &req)?;
    let result = resp
        .results
        .first()
        .ok_or("DescribeConfigs: empty response")?;
    check_with(result.error_code, &result.error_message, "DescribeConfigs")?;
    // Sources: 1 dynamic topic config, 4 static broker config, 5 default.
    let rows = result
        .configs
        .iter()
        .map(|c| {
            let source = match c.config_source {
                1 => "topic",
                4 => "broker",
                5 => "default",
                _ => "other",
            };
            vec![
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                source.to_string(),
            ]
        })
        .collect();
    println!();
    print_table(&["CONFIG", "VALUE", "SOURCE"], rows);
    Ok(())
}

fn alter(client: &mut Client, name: &str, set: &[String], delete: &[String]) -> Result<(), String> {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let mut configs = Vec::new();
    for pair in set {
        let (k, v) = key_value(pair)?;
        configs.push(
            AlterableConfig::default()
                .with_name(s(&k))
                .with_config_operation(SET)
                .with_value(Some(s(&v))),
        );
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
        client.call(ApiKey::IncrementalAlterConfigs, 1, &req)?;
    for r in &resp.responses {
        check_with(r.error_code, &r.error_message, &format!("altering {name}"))?;
    }
    println!("altered topic {name}");
    Ok(())
}
