//! `sluice`: the broker binary. Embedded defaults, overridden by a TOML file, overridden by
//! flags.

use std::path::PathBuf;
use std::process::ExitCode;

mod client;
mod cluster_cmd;
mod consume_cmd;
mod group_member;
mod groups_cmd;
mod output;
mod produce_cmd;
mod requests;
mod topics_cmd;

use clap::{Parser, Subcommand};
use sluice_broker::config::BROKER_CONFIGS;
use sluice_broker::BrokerConfig;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible event streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker. With no arguments: data in ./sluice-data, Kafka listener on
    /// 127.0.0.1:9092, node id 0.
    #[command(after_help = config_help())]
    Serve(ServeArgs),
    /// Consumer groups of a running broker: list, describe, reset-offsets.
    Groups(groups_cmd::GroupsArgs),
    /// Topics of a running broker: create, list, describe, alter, delete.
    Topics(topics_cmd::TopicsArgs),
    /// Write the lines of stdin to a topic, one record per line.
    Produce(produce_cmd::ProduceArgs),
    /// Print the records of a topic, alone or as a member of a consumer group.
    Consume(consume_cmd::ConsumeArgs),
    /// The cluster id, the controller and the brokers; reassignments and leader elections.
    Cluster(cluster_cmd::ClusterArgs),
}

/// `serve --log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Default)]
enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and the event's fields.
    Json,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file of broker configs by their Kafka names, e.g. `num.partitions = 3` (dotted
    /// keys and [tables] both work). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (`log.dirs`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the Kafka listener (`listeners`); port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address advertised to clients (`advertised.listeners`); defaults to the bound address.
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// This broker's id (`node.id`).
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// Address of the admin HTTP listener (`admin.listen`); port 0 picks a free port, `off`
    /// turns it off. Default 127.0.0.1:9644.
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// How log lines are written to stderr.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
    /// Log levels: a default level and per-module levels, as in RUST_LOG, e.g.
    /// `info,sluice_storage=debug`. Default: RUST_LOG if set, else `info`.
    #[arg(long, value_name = "LEVELS")]
    log: Option<String>,
    /// Any broker config by its Kafka name; repeatable. Applied last.
    #[arg(long = "set", short = 'o', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn config_help() -> String {
    let defaults = BrokerConfig::default();
    let mut help = String::from("Broker configs (for --config files and --set), with defaults:\n");
    for (key, _, doc) in BROKER_CONFIGS {
        let value = defaults.get(key).unwrap_or_default();
        help.push_str(&format!("  {key} = {value}\n      {doc}\n"));
    }
    help
}

/// Flattens a TOML document into `dotted.key = value` strings.
fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        toml::Value::Integer(i) => out.push((prefix.to_string(), i.to_string())),
        toml::Value::Boolean(b) => out.push((prefix.to_string(), b.to_string())),
        toml::Value::Float(f) => out.push((prefix.to_string(), f.to_string())),
        other => return Err(format!("{prefix}: unsupported value {other}")),
    }
    Ok(())
}

fn build_config(args: &ServeArgs) -> Result<BrokerConfig, String> {
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let doc: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut pairs = Vec::new();
        flatten("", &doc, &mut pairs)?;
        for (key, value) in pairs {
            config
                .set(&key, &value)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.set_kafka_listener(listen)?;
    }
    if let Some(advertised) = &args.advertised_listener {
        config.set("advertised.listeners", advertised)?;
    }
    if let Some(admin) = &args.admin_listen {
        config.set("admin.listen", admin)?;
    }
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    for pair in &args.overrides {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--set {pair}: expected KEY=VALUE"))?;
        config.set(key.trim(), value.trim())?;
    }
    config.validate()?;
    Ok(config)
}

/// The log filter when neither `--log` nor RUST_LOG gives one. openraft narrates every vote
/// at `info` and repeats an unreachable peer's error twice a second; the quorum's own lines
/// (`sluice_quorum`, `sluice_broker::cluster`) say what an operator needs, once per change.
const DEFAULT_LOG_FILTER: &str = "info,openraft=off";

/// The log filter: `--log`, else RUST_LOG, else [`DEFAULT_LOG_FILTER`]. A directive that does not parse is an
/// error, not a silent fallback: the operator asked for logs they would not get.
fn log_filter(flag: Option<&str>) -> Result<EnvFilter, String> {
    let (source, directives) = match flag {
        Some(directives) => ("--log", directives.to_string()),
        None => match std::env::var("RUST_LOG") {
            Ok(directives) if !directives.trim().is_empty() => ("RUST_LOG", directives),
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                ("default", DEFAULT_LOG_FILTER.to_string())
            }
            Err(e) => return Err(format!("RUST_LOG: {e}")),
        },
    };
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| format!("{source} {directives:?}: {e}"))
}

fn init_logging(args: &ServeArgs) -> Result<(), String> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(args.log.as_deref())?)
        .with_writer(std::io::stderr);
    let installed = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // The message goes at the top level of each object, beside the event's fields.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

/// SIGINT and SIGTERM. Installed before the broker starts: a supervisor may stop it the
/// moment it logs that it is listening, and a signal before the handler would kill it
/// without a clean shutdown.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self, String> {
        let install = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
        })
    }

    async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("received SIGINT"),
            _ = self.terminate.recv() => tracing::info!("received SIGTERM"),
        }
    }
}

async fn serve(config: BrokerConfig) -> Result<(), String> {
    let mut signals = ShutdownSignals::install()?;
    let mut broker = sluice_broker::start(config).await?;
    tokio::select! {
        result = broker.wait() => result,
        _ = signals.received() => broker.shutdown().await,
    }
}

/// Lets an operator command die quietly on a closed pipe (`sluice topics list | head`), as
/// Unix tools do; Rust ignores SIGPIPE, which turns the write error into a panic. Never for
/// `serve`: the broker must survive clients that hang up.
fn default_sigpipe() {
    // SAFETY: restoring the default disposition of a signal; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs an operator command: its exit status, with its error on stderr.
fn operator(run: impl FnOnce() -> Result<(), String>) -> ExitCode {
    default_sigpipe();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve_main(&args),
        Command::Groups(args) => operator(|| groups_cmd::run(args)),
        Command::Topics(args) => operator(|| topics_cmd::run(args)),
        Command::Produce(args) => operator(|| produce_cmd::run(args)),
        Command::Consume(args) => operator(|| consume_cmd::run(args)),
        Command::Cluster(args) => operator(|| cluster_cmd::run(args)),
    }
}

/// How long the runtime waits for blocking threads once the broker has shut down.
const RUNTIME_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `sluice serve`: exit status 2 for flags or configs that do not parse.
fn serve_main(args: &ServeArgs) -> ExitCode {
    let config = match init_logging(args).and_then(|()| build_config(args)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(config));
    // A thread still inside a blocking call (a request abandoned at the shutdown timeout)
    // must not keep the process alive: what it was doing was never acknowledged.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
