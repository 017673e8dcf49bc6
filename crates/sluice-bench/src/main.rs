//! `sluice-bench`: measures a Kafka-compatible broker with librdkafka, next to the machine's
//! own ceilings measured in the same run.
//!
//! `cargo run --release -p sluice-bench -- [--quick] [--bootstrap HOST:PORT] [--json FILE]`
//!
//! Without `--bootstrap` it starts a fresh Sluice broker (the release binary) in its own
//! process, which also lets it report the broker's CPU time and memory.

mod broker;
mod ceilings;
mod conversion;
mod load;
mod partitions;
mod phases;
mod quorum;
mod reliability;
mod replication;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use broker::Broker;
use load::ProduceSpec;

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    about = "Benchmark Sluice against the machine's limits"
)]
struct Args {
    /// A short run (under two minutes) for routine checks.
    #[arg(long)]
    quick: bool,
    /// Benchmark the broker listening here instead of starting Sluice.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// The admin listener of the broker given with --bootstrap, for the per-scenario
    /// breakdown by phase read from its /metrics (found by itself for a broker it starts).
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where the started broker keeps its data and where disk bandwidth is measured.
    #[arg(long, value_name = "DIR", default_value = "target/bench-data")]
    data_dir: PathBuf,
    /// The sluice binary to start (default: the release build next to this one).
    #[arg(long, value_name = "FILE")]
    sluice_bin: Option<PathBuf>,
    /// Run only these groups (produce, consume, latency, fan-in, memory, groups, transactions,
    /// compaction, metrics, reliability, conversion; `partitions`, `large-log`, `quorum` and
    /// `replication` run only when named), for
    /// profiling one
    /// path; the ceilings are always measured.
    #[arg(long, value_name = "GROUP", value_delimiter = ',')]
    only: Vec<String>,
    /// Run only the producer scenarios whose name contains this text (e.g. "100 B, 16"),
    /// from the full matrix even with --quick.
    #[arg(long, value_name = "TEXT")]
    scenario: Option<String>,
}

impl Args {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

#[derive(Serialize, Clone)]
struct Row {
    group: &'static str,
    scenario: String,
    result: String,
    comparison: String,
}

#[derive(Serialize)]
struct Report {
    command: String,
    machine: String,
    broker: String,
    rows: Vec<Row>,
    latency: Vec<load::Latency>,
    phases: Vec<ScenarioPhases>,
}

/// Where one scenario's time went in the broker, from its own metrics.
#[derive(Serialize, Clone)]
struct ScenarioPhases {
    scenario: String,
    phases: Vec<phases::Phase>,
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores, {:.1} GiB RAM, Linux {}",
        mem_kib as f64 / 1048576.0,
        kernel.trim()
    )
}

struct Run {
    rows: Vec<Row>,
    latency: Vec<load::Latency>,
    phases: Vec<ScenarioPhases>,
    scraper: Option<phases::Scraper>,
}

impl Run {
    /// The broker's histograms before a scenario, if it can be scraped.
    fn phases_before(&self) -> Option<phases::Snapshot> {
        self.scraper.as_ref().and_then(phases::Scraper::snapshot)
    }

    /// A row with where `scenario`'s time went in the broker since `before`.
    fn phases_row(&mut self, scenario: &str, before: Option<phases::Snapshot>) {
        let (Some(before), Some(after)) = (
            before,
            self.scraper.as_ref().and_then(phases::Scraper::snapshot),
        ) else {
            return;
        };
        let phases = phases::breakdown(&before, &after);
        self.row(
            "phases",
            scenario.to_string(),
            phases::describe(&phases),
            String::new(),
        );
        self.phases.push(ScenarioPhases {
            scenario: scenario.to_string(),
            phases,
        });
    }

    fn row(
        &mut self,
        group: &'static str,
        scenario: impl Into<String>,
        result: String,
        comparison: String,
    ) {
        let row = Row {
            group,
            scenario: scenario.into(),
            result,
            comparison,
        };
        eprintln!(
            "  {} | {} | {} | {}",
            row.group, row.scenario, row.result, row.comparison
        );
        self.rows.push(row);
    }
}

fn scenario_name(spec: &ProduceSpec) -> String {
    format!(
        "{} B, {} partition{}, acks={}, {}",
        spec.size,
        spec.partitions,
        if spec.partitions == 1 { "" } else { "s" },
        spec.acks,
        spec.compression
    )
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("sluice-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let quick = args.quick;
    let mut run = Run {
        rows: Vec::new(),
        latency: Vec::new(),
        phases: Vec::new(),
        scraper: None,
    };
    let _ = std::fs::remove_dir_all(&args.data_dir);
    std::fs::create_dir_all(&args.data_dir).map_err(|e| e.to_string())?;

    eprintln!("measuring the machine's ceilings");
    let (disk_bytes, tcp_secs) = if quick { (256 << 20, 1) } else { (1 << 30, 3) };
    let disk = ceilings::fdatasync_write_mb_s(&args.data_dir, disk_bytes, 1 << 20)?;
    let tcp = ceilings::loopback_tcp_mb_s(Duration::from_secs(tcp_secs))?;
    if args.wants("latency") {
        // As long as one latency run, at about the 10% run's write rate.
        let secs = if quick { 3 } else { 10 };
        let floor = ceilings::sync_floor(&args.data_dir, 16, 30e6, Duration::from_secs(secs))?;
        run.row(
            "ceiling",
            format!("fdatasync after each 32 KiB append, 16 files, 30 MB/s, {secs} s"),
            format!(
                "p50 {:.2} ms, max {:.2} ms ({} syncs)",
                floor.p50_ms, floor.max_ms, floor.syncs
            ),
            format!(
                "time-weighted p99 wait floor {:.2} ms",
                floor.p99_wait_floor_ms
            ),
        );
    }
    run.row(
        "ceiling",
        "sequential write, fdatasync every 1 MiB",
        format!("{disk:.0} MB/s"),
        String::new(),
    );
    run.row(
        "ceiling",
        "loopback TCP, one stream",
        format!("{tcp:.0} MB/s"),
        String::new(),
    );

    let bin = if args.bootstrap.is_none() {
        Some(broker::locate_binary(args.sluice_bin.clone())?)
    } else {
        None
    };
    let mut broker = match &bin {
        Some(bin) => Some(Broker::start(bin, &args.data_dir.join("broker"), &[])?),
        None => None,
    };
    let bootstrap = match (&args.bootstrap, &broker) {
        (Some(b), _) => b.clone(),
        (None, Some(b)) => b.bootstrap(),
        (None, None) => unreachable!("a broker is started when none is given"),
    };
    let cpu = |b: &Option<Broker>| b.as_ref().map(Broker::cpu_seconds);
    run.scraper = args
        .admin
        .clone()
        .or_else(|| broker.as_ref().and_then(Broker::admin_addr))
        .map(phases::Scraper::new);

    // Producer throughput.
    let mb = 1 << 20;
    let matrix: Vec<ProduceSpec> = if quick && args.scenario.is_none() {
        vec![
            ProduceSpec {
                size: 1024,
                partitions: 16,
                acks: "all",
                compression: "none",
                bytes: 256 * mb,
            },
            ProduceSpec {
                size: 1024,
                partitions: 16,
                acks: "1",
                compression: "none",
                bytes: 256 * mb,
            },
            ProduceSpec {
                size: 1024,
                partitions: 1,
                acks: "all",
                compression: "none",
                bytes: 128 * mb,
            },
            ProduceSpec {
                size: 100,
                partitions: 1,
                acks: "1",
                compression: "none",
                bytes: 32 * mb,
            },
            ProduceSpec {
                size: 1024,
                partitions: 16,
                acks: "all",
                compression: "lz4",
                bytes: 128 * mb,
            },
        ]
    } else {
        let mut m = Vec::new();
        for size in [1024usize, 100] {
            for partitions in [16, 1] {
                for acks in ["all", "1"] {
                    for compression in ["none", "lz4", "zstd"] {
                        let bytes = if size == 100 { 128 * mb } else { 1024 * mb };
                        m.push(ProduceSpec {
                            size,
                            partitions,
                            acks,
                            compression,
                            bytes,
                        });
                    }
                }
            }
        }
        m
    };
    let matrix: Vec<ProduceSpec> = matrix
        .into_iter()
        .filter(|s| {
            args.scenario
                .as_deref()
                .is_none_or(|text| scenario_name(s).contains(text))
        })
        .filter(|s| {
            args.wants("produce")
                || (args.wants("latency")
                    && s.size == 1024
                    && s.partitions == 16
                    && s.acks == "all"
                    && s.compression == "none")
                || (args.wants("consume")
                    && s.size == 1024
                    && s.partitions == 16
                    && s.acks == "1"
                    && s.compression == "none")
        })
        .collect();
    eprintln!("producer throughput ({} scenarios)", matrix.len());
    let mut max_all_1k_16 = 0.0f64;
    let mut backlog: Option<(String, i32, u64)> = None;
    for (i, spec) in matrix.iter().enumerate() {
        let topic = format!("produce-{i}");
        load::create_topic(&bootstrap, &topic, spec.partitions)?;
        let cpu_before = cpu(&broker);
        let phases_before = run.phases_before();
        let result = load::produce(&bootstrap, &topic, *spec)?;
        let cpu_used = cpu(&broker).zip(cpu_before).map(|(a, b)| a - b);
        let name = scenario_name(spec);
        let mut comparison = String::new();
        let gb = (result.messages as usize * spec.size) as f64 / 1e9;
        if spec.acks == "all" && spec.compression == "none" {
            comparison = format!(
                "{:.0}% of fdatasync write bandwidth",
                100.0 * result.mb_s / disk
            );
        } else if spec.compression == "none" {
            comparison = format!("{:.0}% of loopback TCP", 100.0 * result.mb_s / tcp);
        }
        if let Some(cpu) = cpu_used {
            comparison = format!("{comparison}; broker {:.2} CPU-s/GB", cpu / gb)
                .trim_start_matches("; ")
                .to_string();
        }
        run.row(
            "produce",
            name.clone(),
            format!("{:.1} MB/s, {:.0} msg/s", result.mb_s, result.msg_s),
            comparison,
        );
        run.phases_row(&name, phases_before);
        let keep = spec.size == 1024
            && spec.partitions == 16
            && spec.acks == "1"
            && spec.compression == "none";
        if spec.size == 1024
            && spec.partitions == 16
            && spec.acks == "all"
            && spec.compression == "none"
        {
            max_all_1k_16 = result.msg_s;
        }
        if keep {
            backlog = Some((topic, spec.partitions, result.messages));
        } else {
            load::delete_topic(&bootstrap, &topic);
        }
    }

    if let Some((topic, partitions, messages)) = backlog.as_ref().filter(|_| args.wants("consume"))
    {
        eprintln!("consumer throughput");
        let cpu_before = cpu(&broker);
        let phases_before = run.phases_before();
        let r = load::consume_backlog(&bootstrap, topic, *partitions, *messages)?;
        let cpu_used = cpu(&broker).zip(cpu_before).map(|(a, b)| a - b);
        let mut comparison = format!("{:.0}% of loopback TCP", 100.0 * r.mb_s / tcp);
        if let Some(cpu) = cpu_used {
            let gb = (r.messages * 1024) as f64 / 1e9;
            comparison = format!("{comparison}; broker {:.2} CPU-s/GB", cpu / gb);
        }
        let name = format!("backlog of {messages} × 1 KB, 16 partitions");
        run.row(
            "consume",
            name.clone(),
            format!("{:.1} MB/s, {:.0} msg/s", r.mb_s, r.msg_s),
            comparison,
        );
        run.phases_row(&name, phases_before);
        load::delete_topic(&bootstrap, topic);
    }

    if max_all_1k_16 > 0.0 && args.wants("latency") {
        eprintln!("end-to-end latency");
        let secs = if quick { 3 } else { 10 };
        for fraction in [0.1, 0.5, 0.8] {
            let topic = format!("latency-{}", (fraction * 100.0) as u32);
            load::create_topic(&bootstrap, &topic, 16)?;
            let rate = max_all_1k_16 * fraction;
            settle_disk(&args.data_dir.join("broker"));
            let phases_before = run.phases_before();
            let l = load::latency(
                &bootstrap,
                &topic,
                16,
                1024,
                rate,
                Duration::from_secs(secs),
            )?;
            let name = format!(
                "1 KB, 16 partitions, acks=all at {:.0}% of max ({:.0} msg/s)",
                fraction * 100.0,
                rate
            );
            run.row(
                "latency",
                name.clone(),
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
                ),
                format!(
                    "achieved {:.0} msg/s; sent late p50/p99 {:.2}/{:.2} ms; acked p50/p99 \
                     {:.2}/{:.2} ms; librdkafka queue p50/p99 {:.2}/{:.2} ms, produce round \
                     trip p50/p99 {:.2}/{:.2} ms",
                    l.achieved_msg_s,
                    l.send_late_p50_ms,
                    l.send_late_p99_ms,
                    l.acked_p50_ms,
                    l.acked_p99_ms,
                    l.client_queue_p50_ms,
                    l.client_queue_p99_ms,
                    l.rtt_p50_ms,
                    l.rtt_p99_ms
                ),
            );
            run.phases_row(&name, phases_before);
            run.latency.push(l);
            load::delete_topic(&bootstrap, &topic);
        }
    }

    if args.wants("fan-in") {
        eprintln!("fan-in");
        load::create_topic(&bootstrap, "fan-in", 16)?;
        let spec = ProduceSpec {
            size: 1024,
            partitions: 16,
            acks: "all",
            compression: "none",
            bytes: if quick { 64 * mb } else { 512 * mb },
        };
        let phases_before = run.phases_before();
        let r = load::fan_in(&bootstrap, "fan-in", 100, spec)?;
        let name = "100 producers, 1 KB, 16 partitions, acks=all";
        run.row(
            "fan-in",
            name,
            format!("{:.1} MB/s, {:.0} msg/s", r.mb_s, r.msg_s),
            format!("{:.0}% of fdatasync write bandwidth", 100.0 * r.mb_s / disk),
        );
        run.phases_row(name, phases_before);
        load::delete_topic(&bootstrap, "fan-in");
    }

    // Only meaningful when load ran on this broker.
    if let Some(b) = broker
        .as_mut()
        .filter(|_| !matrix.is_empty() || args.wants("fan-in"))
    {
        run.row(
            "memory",
            "peak RSS during the runs above",
            format!("{:.0} MiB", b.peak_rss_mib()),
            String::new(),
        );
        b.stop()?;
    }
    drop(broker);
    // The brokers started below are their own; their phases are not broken down.
    run.scraper = None;

    if let Some(bin) = bin.as_ref().filter(|_| args.wants("memory")) {
        eprintln!("idle memory and start-up with 1,000 partitions");
        let dir = args.data_dir.join("partitions-1000");
        let mut b = Broker::start(bin, &dir, &[])?;
        let bs = b.bootstrap();
        for t in 0..10 {
            load::create_topic(&bs, &format!("idle-{t}"), 100)?;
        }
        let rss = b.rss_mib();
        run.row(
            "memory",
            "idle broker, 1,000 partitions",
            format!("{rss:.0} MiB RSS"),
            "target < 200 MiB".into(),
        );
        let data = if quick { 1usize << 30 } else { 10 << 30 };
        let per_topic = ProduceSpec {
            size: 1024,
            partitions: 100,
            acks: "1",
            compression: "none",
            bytes: data / 10,
        };
        for t in 0..10 {
            load::produce(&bs, &format!("idle-{t}"), per_topic)?;
        }
        let startup = b.restart()?;
        run.row(
            "start-up",
            format!("clean restart, 1,000 partitions, {} GiB", data >> 30),
            format!("{:.2} s to accept connections", startup.as_secs_f64()),
            "target < 2 s".into(),
        );
        b.stop()?;
    }

    if let Some(bin) = bin.as_ref().filter(|_| args.wants("groups")) {
        // The group coordinator rebuilds itself from __consumer_offsets at start-up.
        let groups = if quick { 100 } else { 1000 };
        let partitions = 1000;
        eprintln!(
            "committing {} offsets, then restarting",
            groups * partitions as usize
        );
        let dir = args.data_dir.join("groups");
        let mut b = Broker::start(bin, &dir, &[])?;
        let bs = b.bootstrap();
        load::create_topic(&bs, "committed", partitions)?;
        let rate = load::commit_offsets(&bs, "committed", groups, partitions)?;
        run.row(
            "groups",
            format!("OffsetCommit, {partitions} offsets per request, one group each"),
            format!("{rate:.0} offsets/s"),
            String::new(),
        );
        b.restart()?;
        let line = b.wait_for_log("group coordinator loaded")?;
        let elapsed_ms = line
            .split("elapsed_ms=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| format!("no elapsed_ms in {line:?}"))?;
        load::check_committed(&b.bootstrap(), "committed", groups - 1, partitions)?;
        run.row(
            "groups",
            format!(
                "coordinator load at start-up, {} committed offsets",
                groups * partitions as usize
            ),
            format!("{:.2} s", elapsed_ms as f64 / 1000.0),
            String::new(),
        );
        b.stop()?;
    }

    if let Some(bin) = bin.as_ref().filter(|_| args.wants("transactions")) {
        // The cost of each delivery guarantee: the same load, one after the other against
        // one broker, then the plain run again to show how much the machine drifts.
        let dir = args.data_dir.join("transactions");
        let mut b = Broker::start(bin, &dir, &[])?;
        let bs = b.bootstrap();
        let spec = ProduceSpec {
            size: 1024,
            partitions: 16,
            acks: "all",
            compression: "none",
            bytes: if quick { 64 << 20 } else { 512 << 20 },
        };
        let runs = [
            ("acks=all, idempotence off", load::Guarantee::Plain),
            (
                "idempotent (enable.idempotence=true)",
                load::Guarantee::Idempotent,
            ),
            (
                "transactional, 10,000 messages per transaction",
                load::Guarantee::Transactional { per_txn: 10_000 },
            ),
            (
                "transactional, 1,000 messages per transaction",
                load::Guarantee::Transactional { per_txn: 1_000 },
            ),
            (
                "transactional, 100 messages per transaction",
                load::Guarantee::Transactional { per_txn: 100 },
            ),
            ("acks=all, idempotence off (again)", load::Guarantee::Plain),
        ];
        for (i, (what, guarantee)) in runs.into_iter().enumerate() {
            eprintln!("transactions: {what}");
            let topic = format!("eos-{i}");
            load::create_topic(&bs, &topic, spec.partitions)?;
            let r = load::produce_with(&bs, &topic, spec, guarantee)?;
            run.row(
                "transactions",
                format!("1 KiB, 16 partitions, {what}"),
                format!("{:.0} msg/s ({:.1} MB/s)", r.msg_s, r.mb_s),
                format!("{} messages", r.messages),
            );
        }
        // Coordinator recovery: replaying __transaction_state after a restart.
        let ids = if quick { 100 } else { 500 };
        eprintln!("transactions: {ids} transactional ids, then a restart");
        load::create_topic(&bs, "txn-load", 4)?;
        let rate = load::commit_transactions(&bs, "txn-load", ids)?;
        run.row(
            "transactions",
            format!("{ids} producers: init, one transaction of one message, commit"),
            format!("{rate:.0} transactions/s"),
            "a new librdkafka producer per transaction".into(),
        );
        b.restart()?;
        let line = b.wait_for_log("transaction coordinator loaded")?;
        let field = |name: &str| -> Result<u64, String> {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .ok_or_else(|| format!("no {name} in {line:?}"))
        };
        run.row(
            "transactions",
            format!("coordinator load at start-up, {ids} transactional ids"),
            format!("{:.3} s", field("elapsed_ms")? as f64 / 1000.0),
            format!("{} records replayed", field("records")?),
        );
        b.stop()?;
    }

    if let Some(bin) = bin.as_ref().filter(|_| args.wants("metrics")) {
        metrics_overhead(bin, args, quick, &mut run)?;
    }

    if let Some(bin) = bin.as_ref().filter(|_| args.wants("conversion")) {
        conversion::run(bin, &args.data_dir, quick, &mut run)?;
    }
    if let Some(bin) = bin.as_ref().filter(|_| args.wants("reliability")) {
        reliability::run_all(bin, &args.data_dir, quick, &mut run)?;
    }
    // Not in the default run (100,000 partition directories; 16 GiB): ask for them.
    let named = |group: &str| args.only.iter().any(|g| g == group);
    if let Some(bin) = bin.as_ref().filter(|_| named("partitions")) {
        partitions::run(bin, &args.data_dir, quick, &mut run)?;
    }
    if let Some(bin) = bin
        .as_ref()
        .filter(|_| named("partitions") || named("large-log"))
    {
        partitions::large_log(bin, &args.data_dir, quick, &mut run)?;
    }
    if let Some(bin) = bin.as_ref().filter(|_| named("quorum")) {
        quorum::run(bin, &args.data_dir, quick, &mut run)?;
    }
    if let Some(bin) = bin.as_ref().filter(|_| named("replication")) {
        replication::run(bin, &args.data_dir, quick, &mut run)?;
    }
    if let Some(bin) = bin.as_ref().filter(|_| args.wants("compaction")) {
        // A log of 4,096 keys written as a plain log, then switched to compaction: one
        // cleaner pass over all of it, with the I/O throttle off (the default), while a
        // latency run goes on against another topic; the same latency run before, idle.
        let data = if quick { 512usize << 20 } else { 2 << 30 };
        eprintln!("compaction of {} MiB", data >> 20);
        let dir = args.data_dir.join("compaction");
        let mut b = Broker::start(bin, &dir, &["--set", "log.cleaner.backoff.ms=200"])?;
        let bs = b.bootstrap();
        load::create_topic_with(&bs, "table", 1, &[("segment.bytes", "67108864")])?;
        load::produce(
            &bs,
            "table",
            ProduceSpec {
                size: 1024,
                partitions: 1,
                acks: "1",
                compression: "none",
                bytes: data,
            },
        )?;
        // A fresh topic per run: a latency run reads its own stamps only.
        load::create_topic(&bs, "latency-idle", 16)?;
        load::create_topic(&bs, "latency-busy", 16)?;
        let secs = if quick { 3 } else { 8 };
        let rate = 20_000.0;
        let idle = load::latency(
            &bs,
            "latency-idle",
            16,
            1024,
            rate,
            Duration::from_secs(secs),
        )?;
        load::alter_topic(
            &bs,
            "table",
            &[("segment.bytes", "67108864"), ("cleanup.policy", "compact")],
        )?;
        let busy = load::latency(
            &bs,
            "latency-busy",
            16,
            1024,
            rate,
            Duration::from_secs(secs),
        )?;
        let line = b.wait_for_log("cleaned log")?;
        let field = |name: &str| -> Result<f64, String> {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .ok_or_else(|| format!("no {name} in {line:?}"))
        };
        let (bytes_before, bytes_after) = (field("bytes_before")?, field("bytes_after")?);
        let (records_before, records_after) = (field("records_before")?, field("records_after")?);
        let elapsed_s = field("elapsed_ms")? / 1000.0;
        run.row(
            "compaction",
            "one pass, 4,096 keys, 1 KiB values, I/O throttle off",
            format!(
                "{:.0} MB/s ({:.0} MB in {:.2} s)",
                bytes_before / 1e6 / elapsed_s,
                bytes_before / 1e6,
                elapsed_s
            ),
            format!(
                "records {records_before:.0} → {records_after:.0}, bytes {:.0} MB → {:.2} MB",
                bytes_before / 1e6,
                bytes_after / 1e6
            ),
        );
        let busy_what = format!("cleaner running ({elapsed_s:.1} s of the {secs} s run)");
        for (what, l) in [("cleaner idle", &idle), (busy_what.as_str(), &busy)] {
            run.row(
                "compaction",
                format!("produce latency, 1 KB, 16 partitions, acks=all, {rate:.0} msg/s, {what}"),
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
                ),
                format!("achieved {:.0} msg/s", l.achieved_msg_s),
            );
        }
        b.stop()?;
    }

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = Report {
        command: command.clone(),
        machine: machine(),
        broker: args
            .bootstrap
            .clone()
            .unwrap_or_else(|| "sluice (started by the benchmark)".into()),
        rows: run.rows.clone(),
        latency: run.latency.clone(),
        phases: run.phases.clone(),
    };
    println!("Command: `{command}`  ");
    println!("Machine: {}  ", report.machine);
    println!("Broker: {}  ", report.broker);
    println!("Took {:.0} s\n", started.elapsed().as_secs_f64());
    println!("| group | scenario | result | against |");
    println!("| --- | --- | --- | --- |");
    for r in &run.rows {
        println!(
            "| {} | {} | {} | {} |",
            r.group, r.scenario, r.result, r.comparison
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_dir_all(&args.data_dir);
    Ok(())
}

/// The cost of recording metrics on the produce path: the same loads against a broker with
/// `metrics.enabled` on and off, alternating, three rounds, a fresh broker each run. The
/// median of each setting is reported next to every run, so the VM's drift shows too.
fn metrics_overhead(bin: &Path, args: &Args, quick: bool, run: &mut Run) -> Result<(), String> {
    let specs = [
        ProduceSpec {
            size: 100,
            partitions: 16,
            acks: "1",
            compression: "none",
            bytes: if quick { 32 << 20 } else { 128 << 20 },
        },
        ProduceSpec {
            size: 1024,
            partitions: 16,
            acks: "all",
            compression: "none",
            bytes: if quick { 128 << 20 } else { 512 << 20 },
        },
    ];
    let settings: [(&str, &[&str]); 2] = [
        ("metrics on", &[]),
        ("metrics off", &["--set", "metrics.enabled=false"]),
    ];
    for spec in specs {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        // Broker CPU per message varies less between runs than throughput does.
        let mut cpu_us: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..3 {
            for (i, (label, extra)) in settings.iter().enumerate() {
                eprintln!(
                    "metrics: {}, {label}, round {}",
                    scenario_name(&spec),
                    round + 1
                );
                let dir = args.data_dir.join("metrics");
                let _ = std::fs::remove_dir_all(&dir);
                let mut b = Broker::start(bin, &dir, extra)?;
                let bs = b.bootstrap();
                load::create_topic(&bs, "metered", spec.partitions)?;
                let cpu_before = b.cpu_seconds();
                let r = load::produce(&bs, "metered", spec)?;
                let us_per_msg = (b.cpu_seconds() - cpu_before) * 1e6 / r.messages as f64;
                b.stop()?;
                rates[i].push(r.msg_s);
                cpu_us[i].push(us_per_msg);
                run.row(
                    "metrics",
                    format!("{}, {label}, round {}", scenario_name(&spec), round + 1),
                    format!("{:.0} msg/s ({:.1} MB/s)", r.msg_s, r.mb_s),
                    format!("broker {us_per_msg:.3} CPU-µs/msg"),
                );
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (on, off) = (median(&mut rates[0]), median(&mut rates[1]));
        let (cpu_on, cpu_off) = (median(&mut cpu_us[0]), median(&mut cpu_us[1]));
        run.row(
            "metrics",
            format!("{}, median of 3: on vs off", scenario_name(&spec)),
            format!("{on:.0} vs {off:.0} msg/s"),
            format!(
                "on/off = {:.3}; broker {cpu_on:.3} vs {cpu_off:.3} CPU-µs/msg",
                on / off
            ),
        );
    }
    Ok(())
}

/// Lets the disk finish the previous scenario's work before a latency run: waits (at most
/// 60 s) until the broker has removed the partitions of deleted topics under `dir`, then
/// syncs every filesystem. Without it a latency run measures the writeback and the TRIMs of
/// the gigabytes the throughput runs just wrote and deleted.
fn settle_disk(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let pending = std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with("-delete"))
                .count()
        });
        if pending == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}
