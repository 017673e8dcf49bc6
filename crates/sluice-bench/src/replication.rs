//! Replication (issue 17), on three nodes on loopback with Kafka's default timings:
//! acks=all throughput and the brokers' CPU per GB with three replicas against one, in the
//! same cluster and run; end-to-end latency at half the three-replica maximum; and partition
//! failover: the leader of a partition is killed (-9) under acks=all load, and the time is
//! taken from the kill to the first acks=all produce acknowledged after it.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use crate::broker::Broker;
use crate::load::{self, ProduceSpec};
use crate::quorum::{ms, start_cluster, wait};
use crate::Run;

/// The leader of `topic`'s partition 0, from the cluster's metadata.
fn leader_of(bootstrap: &str, topic: &str) -> Result<Option<i32>, String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(md
        .topics()
        .first()
        .and_then(|t| t.partitions().iter().find(|p| p.id() == 0))
        .map(|p| p.leader())
        .filter(|&l| l >= 0))
}

/// When each message (numbered in its payload) was acknowledged, from the producer's epoch.
struct Acks {
    epoch: Instant,
    acked: Mutex<Vec<(u64, Duration)>>,
}

impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        use rdkafka::Message;
        if let Ok(m) = result {
            if let Some(p) = m.payload().filter(|p| p.len() >= 8) {
                let n = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                self.acked
                    .lock()
                    .expect("acks")
                    .push((n, self.epoch.elapsed()));
            }
        }
    }
}

/// One failover: a fresh cluster, one partition of three replicas (min.insync.replicas=2),
/// a message every 2 ms with acks=all; the leader is killed; returns the time from the kill
/// to the first acknowledgement of a message sent after it.
fn failover_once(bin: &Path, dir: &Path) -> Result<Duration, String> {
    let (mut nodes, _admins) = start_cluster(bin, dir, &[])?;
    let bootstrap = nodes
        .iter()
        .map(|(_, b)| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    load::create_replicated_topic(
        &bootstrap,
        "failover",
        1,
        3,
        &[("min.insync.replicas", "2")],
    )?;
    let mut leader = None;
    wait("a leader for the partition", || {
        leader = leader_of(&bootstrap, "failover").ok().flatten();
        leader.is_some()
    })?;
    let leader = leader.expect("waited") as i64;
    let epoch = Instant::now();
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "120000")
        .create_with_context(Acks {
            epoch,
            acked: Mutex::new(Vec::new()),
        })
        .map_err(|e| e.to_string())?;
    let send = |n: u64| {
        let payload = n.to_le_bytes();
        let _ = producer.send(BaseRecord::<(), _>::to("failover").payload(&payload[..]));
        producer.poll(Duration::ZERO);
    };
    let mut n = 0u64;
    // Steady state first: a second of acknowledged produce.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        send(n);
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = producer.flush(Duration::from_secs(30));
    let first_after = n;
    nodes
        .iter_mut()
        .find(|(id, _)| *id == leader)
        .ok_or("the leader is not a node")?
        .1
        .kill();
    let killed = epoch.elapsed();
    let deadline = Instant::now() + Duration::from_secs(90);
    let acked_after = |acks: &Acks| {
        acks.acked
            .lock()
            .expect("acks")
            .iter()
            .filter(|(m, _)| *m >= first_after)
            .map(|(_, at)| *at)
            .min()
    };
    let failover = loop {
        send(n);
        n += 1;
        if let Some(at) = acked_after(producer.context()) {
            break at.saturating_sub(killed);
        }
        if Instant::now() > deadline {
            return Err("no acks=all produce succeeded after the leader was killed".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = producer.flush(Duration::from_secs(30));
    drop(producer);
    for (_, node) in &mut nodes {
        let _ = node.stop();
    }
    Ok(failover)
}

fn cpu(nodes: &[(i64, Broker)]) -> f64 {
    nodes.iter().map(|(_, b)| b.cpu_seconds()).sum()
}

pub fn run(bin: &Path, data_dir: &Path, quick: bool, run: &mut Run) -> Result<(), String> {
    let dir = data_dir.join("replication");
    let bytes = if quick { 128usize << 20 } else { 512 << 20 };
    eprintln!(
        "replication: acks=all {} MiB with one and with three replicas",
        bytes >> 20
    );
    {
        let (mut nodes, admins) = start_cluster(bin, &dir, &[])?;
        let bootstrap = nodes
            .iter()
            .map(|(_, b)| b.bootstrap())
            .collect::<Vec<_>>()
            .join(",");
        let mut max_msg_s = 0.0f64;
        for (topic, replicas) in [("rf1", 1), ("rf3", 3)] {
            let configs: &[(&str, &str)] = if replicas == 3 {
                &[("min.insync.replicas", "2")]
            } else {
                &[]
            };
            load::create_replicated_topic(&bootstrap, topic, 3, replicas, configs)?;
            let before = cpu(&nodes);
            let r = load::produce(
                &bootstrap,
                topic,
                ProduceSpec {
                    size: 1024,
                    partitions: 3,
                    acks: "all",
                    compression: "none",
                    bytes,
                },
            )?;
            let used = cpu(&nodes) - before;
            let gb = (r.messages as f64 * 1024.0) / 1e9;
            if replicas == 3 {
                max_msg_s = r.msg_s;
            }
            run.row(
                "replication",
                format!("acks=all 1 KB, 3 partitions, replication factor {replicas}, 3 brokers"),
                format!("{:.1} MB/s ({:.0} msg/s)", r.mb_s, r.msg_s),
                format!("all three brokers {:.2} CPU-s/GB", used / gb),
            );
        }
        load::create_replicated_topic(
            &bootstrap,
            "rf3-latency",
            3,
            3,
            &[("min.insync.replicas", "2")],
        )?;
        let rate = (max_msg_s * 0.5).max(100.0);
        let secs = if quick { 5 } else { 15 };
        // Where the time goes, per broker (each leads one partition and follows two).
        let scrapers: Vec<(i64, crate::phases::Scraper)> = admins
            .iter()
            .map(|(id, admin)| (*id, crate::phases::Scraper::new(admin.clone())))
            .collect();
        let before: Vec<_> = scrapers.iter().map(|(_, s)| s.snapshot()).collect();
        let l = load::latency(
            &bootstrap,
            "rf3-latency",
            3,
            1024,
            rate,
            Duration::from_secs(secs),
        )?;
        run.row(
            "replication",
            format!(
                "end-to-end latency, 1 KB acks=all, replication factor 3, at 50% of its maximum \
                 ({rate:.0} msg/s)"
            ),
            format!(
                "p50 {:.2} ms / p99 {:.2} ms / max {:.1} ms",
                l.p50_ms, l.p99_ms, l.max_ms
            ),
            format!(
                "achieved {:.0} msg/s; produce acknowledged p99 {:.2} ms",
                l.achieved_msg_s, l.acked_p99_ms
            ),
        );
        for ((id, scraper), before) in scrapers.iter().zip(before) {
            let (Some(before), Some(after)) = (before, scraper.snapshot()) else {
                continue;
            };
            run.row(
                "phases",
                format!("replication factor 3 at 50% of its maximum, broker {id}"),
                crate::phases::describe(&crate::phases::breakdown(&before, &after)),
                String::new(),
            );
        }
        for (_, node) in &mut nodes {
            node.stop()?;
        }
    }
    let runs = if quick { 2 } else { 5 };
    eprintln!("replication: partition leader failover, {runs} runs");
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(ms(failover_once(bin, &dir)?));
    }
    times.sort_by(f64::total_cmp);
    run.row(
        "replication",
        format!("kill -9 of a partition leader under acks=all load: first produce acknowledged after it ({runs} runs)"),
        format!(
            "min {:.0} / median {:.0} / max {:.0} ms",
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        ),
        "broker.session.timeout.ms=9000 (Kafka's default) bounds it: the controller fences the dead broker, then elects an in-sync follower".into(),
    );
    Ok(())
}
