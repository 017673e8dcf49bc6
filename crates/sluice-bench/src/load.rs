//! Load generated with librdkafka (the rdkafka crate), so the client is not ours.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// Counts deliveries.
#[derive(Default)]
pub struct Counter {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counter {}
impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Client settings from `SLUICE_BENCH_CLIENT="key=value,key=value"`, applied to every
/// producer and consumer after the benchmark's own: for experiments with client tuning.
fn client_overrides(c: &mut ClientConfig) {
    if let Ok(list) = std::env::var("SLUICE_BENCH_CLIENT") {
        for pair in list.split(',').filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                c.set(k.trim(), v.trim());
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<(), String> {
    create_topic_with(bootstrap, name, partitions, &[])
}

/// Creates a topic with config overrides.
pub fn create_topic_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    create_replicated_topic(bootstrap, name, partitions, 1, configs)
}

/// Creates a topic of `replicas` replicas per partition, with config overrides.
pub fn create_replicated_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    let results = runtime()
        .block_on(admin.create_topics([&topic], &opts))
        .map_err(|e| e.to_string())?;
    for r in results {
        r.map_err(|(name, code)| format!("creating {name}: {code}"))?;
    }
    Ok(())
}

/// Replaces a topic's config overrides (AlterConfigs).
pub fn alter_topic(bootstrap: &str, name: &str, configs: &[(&str, &str)]) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let mut alter =
        rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(name));
    for (k, v) in configs {
        alter = alter.set(k, v);
    }
    let results = runtime()
        .block_on(admin.alter_configs([&alter], &AdminOptions::new()))
        .map_err(|e| e.to_string())?;
    for r in results {
        r.map_err(|(_, code)| format!("altering {name}: {code}"))?;
    }
    Ok(())
}

pub fn delete_topic(bootstrap: &str, name: &str) {
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let _ = runtime().block_on(admin.delete_topics(&[name], &AdminOptions::new()));
}

/// Payloads of moderate compressibility (random letters from a 16-letter alphabet), so
/// compressed scenarios are neither flattered by zeros nor defeated by noise.
pub fn payloads(size: usize, count: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count)
        .map(|_| {
            (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b'a' + (state % 16) as u8
                })
                .collect()
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub struct ProduceSpec {
    pub size: usize,
    pub partitions: i32,
    pub acks: &'static str,
    pub compression: &'static str,
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct ProduceResult {
    pub messages: u64,
    pub mb_s: f64,
    pub msg_s: f64,
}

fn producer_config(bootstrap: &str, acks: &str, compression: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "false");
    client_overrides(&mut c);
    c
}

/// Sends `messages` messages as fast as librdkafka accepts them and waits for every delivery.
fn drive(producer: &BaseProducer<Counter>, topic: &str, messages: u64, payloads: &[Vec<u8>]) {
    send_all(producer, topic, messages, payloads);
    let _ = producer.flush(Duration::from_secs(300));
}

/// Sends `messages` messages as fast as librdkafka accepts them, without waiting.
fn send_all(producer: &BaseProducer<Counter>, topic: &str, messages: u64, payloads: &[Vec<u8>]) {
    for i in 0..messages {
        let key = (i % 4096).to_be_bytes();
        let payload = &payloads[(i % payloads.len() as u64) as usize];
        let mut record = BaseRecord::to(topic)
            .key(&key[..])
            .payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
}

/// The throughput of a run whose every delivery must have succeeded.
fn outcome(
    producer: &BaseProducer<Counter>,
    messages: u64,
    size: usize,
    seconds: f64,
) -> Result<ProduceResult, String> {
    let ok = producer.context().ok.load(Ordering::Relaxed);
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 || ok != messages {
        return Err(format!(
            "{failed} deliveries failed, {ok} of {messages} acknowledged"
        ));
    }
    Ok(ProduceResult {
        messages,
        mb_s: (messages as usize * size) as f64 / seconds / 1e6,
        msg_s: messages as f64 / seconds,
    })
}

/// Producer throughput: MB/s of message values (uncompressed, as Kafka's perf tool counts).
pub fn produce(bootstrap: &str, topic: &str, spec: ProduceSpec) -> Result<ProduceResult, String> {
    produce_with_settings(bootstrap, topic, spec, &[])
}

/// [`produce`] with extra client settings (`api.version.request=false` and an old
/// `broker.version.fallback`, say, for a client that speaks the old message formats).
pub fn produce_with_settings(
    bootstrap: &str,
    topic: &str,
    spec: ProduceSpec,
    settings: &[(&str, &str)],
) -> Result<ProduceResult, String> {
    let messages = (spec.bytes / spec.size).max(1) as u64;
    let mut config = producer_config(bootstrap, spec.acks, spec.compression);
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let producer: BaseProducer<Counter> = config
        .create_with_context(Counter::default())
        .map_err(|e| e.to_string())?;
    let payloads = payloads(spec.size, 64);
    let start = Instant::now();
    drive(&producer, topic, messages, &payloads);
    let seconds = start.elapsed().as_secs_f64();
    outcome(&producer, messages, spec.size, seconds)
}

/// How a throughput run produces: the same load with each delivery guarantee.
#[derive(Debug, Clone, Copy)]
pub enum Guarantee {
    /// acks=all, idempotence off.
    Plain,
    /// enable.idempotence=true (acks=all, sequence numbers checked by the broker).
    Idempotent,
    /// A transactional producer committing every `per_txn` messages.
    Transactional { per_txn: u64 },
}

/// Producer throughput under a delivery guarantee, acks=all, as [`produce`] measures it.
pub fn produce_with(
    bootstrap: &str,
    topic: &str,
    spec: ProduceSpec,
    guarantee: Guarantee,
) -> Result<ProduceResult, String> {
    let messages = (spec.bytes / spec.size).max(1) as u64;
    let mut config = producer_config(bootstrap, "all", spec.compression);
    match guarantee {
        Guarantee::Plain => {}
        Guarantee::Idempotent => {
            config.set("enable.idempotence", "true");
        }
        Guarantee::Transactional { .. } => {
            config
                .set("enable.idempotence", "true")
                .set("transactional.id", format!("bench-{topic}"));
        }
    }
    let producer: BaseProducer<Counter> = config
        .create_with_context(Counter::default())
        .map_err(|e| e.to_string())?;
    let payloads = payloads(spec.size, 64);
    let timeout = Duration::from_secs(60);
    let start = Instant::now();
    match guarantee {
        Guarantee::Transactional { per_txn } => {
            producer
                .init_transactions(timeout)
                .map_err(|e| e.to_string())?;
            let mut sent = 0;
            while sent < messages {
                let n = per_txn.min(messages - sent);
                producer.begin_transaction().map_err(|e| e.to_string())?;
                send_all(&producer, topic, n, &payloads);
                // The commit flushes first; waiting here keeps it from doing so in
                // rust-rdkafka's 100 ms steps.
                await_deliveries(&producer, timeout);
                producer
                    .commit_transaction(timeout)
                    .map_err(|e| format!("commit: {e}"))?;
                producer.poll(Duration::ZERO);
                sent += n;
            }
        }
        _ => {
            send_all(&producer, topic, messages, &payloads);
            await_deliveries(&producer, timeout);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    // Delivery reports still queued after the last commit.
    let _ = producer.flush(Duration::from_secs(60));
    outcome(&producer, messages, spec.size, seconds)
}

/// Waits for every delivery report, polling in 1 ms steps (rust-rdkafka's flush polls in
/// 100 ms steps, which distorts short runs and short transactions alike).
fn await_deliveries(producer: &BaseProducer<Counter>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        producer.poll(Duration::from_millis(1));
    }
}

/// `ids` transactional producers (`load-txn-{i}`), each committing one transaction of one
/// message to `topic`. Returns transactions per second.
pub fn commit_transactions(bootstrap: &str, topic: &str, ids: usize) -> Result<f64, String> {
    let timeout = Duration::from_secs(60);
    let started = Instant::now();
    for i in 0..ids {
        let mut config = producer_config(bootstrap, "all", "none");
        config
            .set("enable.idempotence", "true")
            .set("transactional.id", format!("load-txn-{i}"));
        let producer: BaseProducer<Counter> = config
            .create_with_context(Counter::default())
            .map_err(|e| e.to_string())?;
        producer
            .init_transactions(timeout)
            .map_err(|e| e.to_string())?;
        producer.begin_transaction().map_err(|e| e.to_string())?;
        let key = i.to_be_bytes();
        producer
            .send(BaseRecord::to(topic).key(&key[..]).payload("v"))
            .map_err(|(e, _)| e.to_string())?;
        producer
            .commit_transaction(timeout)
            .map_err(|e| format!("commit {i}: {e}"))?;
    }
    Ok(ids as f64 / started.elapsed().as_secs_f64())
}

/// `producers` independent producers (each its own connection) sharing `bytes`.
pub fn fan_in(
    bootstrap: &str,
    topic: &str,
    producers: usize,
    spec: ProduceSpec,
) -> Result<ProduceResult, String> {
    let per = (spec.bytes / spec.size / producers).max(1) as u64;
    let payloads = Arc::new(payloads(spec.size, 64));
    let clients: Vec<BaseProducer<Counter>> = (0..producers)
        .map(|_| {
            producer_config(bootstrap, spec.acks, spec.compression)
                .create_with_context(Counter::default())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    std::thread::scope(|s| {
        for producer in &clients {
            let payloads = payloads.clone();
            s.spawn(move || drive(producer, topic, per, &payloads));
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let ok: u64 = clients
        .iter()
        .map(|p| p.context().ok.load(Ordering::Relaxed))
        .sum();
    let total = per * producers as u64;
    if ok != total {
        return Err(format!("{ok} of {total} acknowledged"));
    }
    Ok(ProduceResult {
        messages: total,
        mb_s: (total as usize * spec.size) as f64 / seconds / 1e6,
        msg_s: total as f64 / seconds,
    })
}

fn consumer(bootstrap: &str, settings: &[(&str, &str)]) -> Result<BaseConsumer, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", "sluice-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50");
    client_overrides(&mut c);
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c.create().map_err(|e| e.to_string())
}

fn assign_all(c: &BaseConsumer, topic: &str, partitions: i32) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| e.to_string())
}

/// Consumer throughput reading an existing backlog of `messages` from the beginning.
pub fn consume_backlog(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    messages: u64,
) -> Result<ProduceResult, String> {
    consume_backlog_with_settings(bootstrap, topic, partitions, messages, &[])
}

/// [`consume_backlog`] with extra client settings.
pub fn consume_backlog_with_settings(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    messages: u64,
    settings: &[(&str, &str)],
) -> Result<ProduceResult, String> {
    let c = consumer(bootstrap, settings)?;
    assign_all(&c, topic, partitions)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    let (mut n, mut bytes) = (0u64, 0usize);
    while n < messages && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            n += 1;
            bytes += m.payload_len();
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if n < messages {
        return Err(format!("consumed {n} of {messages}"));
    }
    Ok(ProduceResult {
        messages: n,
        mb_s: bytes as f64 / seconds / 1e6,
        msg_s: n as f64 / seconds,
    })
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    pub target_msg_s: f64,
    pub achieved_msg_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// How late the sender handed messages to the client (p50, p99): the benchmark's own
    /// share of the end-to-end figures.
    pub send_late_p50_ms: f64,
    pub send_late_p99_ms: f64,
    /// From due time to the producer's delivery report (acks=all answered), p50 and p99.
    pub acked_p50_ms: f64,
    pub acked_p99_ms: f64,
    /// librdkafka's own view of the producer, the median over its one-second windows of each
    /// window's p50 and p99: time in its queue before a Produce request (`int_latency`), and
    /// the request's round trip to the broker and back (`rtt`).
    pub client_queue_p50_ms: f64,
    pub client_queue_p99_ms: f64,
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
}

/// Records, for each delivered latency-run message, the time from its due stamp to its
/// delivery report.
struct AckClock {
    epoch: Instant,
    acked: std::sync::Mutex<Vec<u64>>,
    /// Per statistics window: (int_latency p50, p99, rtt p50, p99), microseconds.
    windows: std::sync::Mutex<Vec<[i64; 4]>>,
}

impl ClientContext for AckClock {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            if let (Some(queue), Some(rtt)) = (&broker.int_latency, &broker.rtt) {
                if rtt.cnt > 0 {
                    self.windows
                        .lock()
                        .expect("stats windows")
                        .push([queue.p50, queue.p99, rtt.p50, rtt.p99]);
                }
            }
        }
    }
}
impl ProducerContext for AckClock {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        if let Ok(m) = result {
            if let Some(p) = m.payload().filter(|p| p.len() >= 8) {
                let due = u64::from_le_bytes(p[..8].try_into().expect("8-byte stamp"));
                if due != WARM_UP {
                    self.acked
                        .lock()
                        .expect("ack clock")
                        .push(now.saturating_sub(due));
                }
            }
        }
    }
}

/// The `q` quantile of sorted nanosecond samples, in milliseconds.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)] as f64 / 1e6
}

/// Marks warm-up messages, which prove the consumer is fetching before the clock starts.
const WARM_UP: u64 = u64::MAX;

/// End-to-end latency at a fixed rate, free of coordinated omission: message i is due at
/// `begin + i / rate`, carries that due time, and its latency is measured from the due time,
/// so a stalled producer's backlog counts against the broker rather than vanishing.
///
/// The schedule starts only once the consumer has received a warm-up message, so client
/// start-up (metadata, offsets, the first fetch) is not charged to the broker.
pub fn latency(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    size: usize,
    rate: f64,
    duration: Duration,
) -> Result<Latency, String> {
    let total = (rate * duration.as_secs_f64()) as u64;
    let c = consumer(bootstrap, &[])?;
    assign_all(&c, topic, partitions)?;
    let epoch = Instant::now();
    let producer: BaseProducer<AckClock> = {
        let mut cfg = producer_config(bootstrap, "all", "none");
        cfg.set("linger.ms", "1");
        cfg.set("statistics.interval.ms", "1000");
        client_overrides(&mut cfg);
        cfg.create_with_context(AckClock {
            epoch,
            acked: std::sync::Mutex::new(Vec::with_capacity(total as usize)),
            windows: std::sync::Mutex::new(Vec::new()),
        })
        .map_err(|e| e.to_string())?
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let consumer_thread = std::thread::spawn(move || {
        let mut latencies = Vec::with_capacity(total as usize);
        let mut warm = false;
        let deadline = Instant::now() + duration + Duration::from_secs(120);
        while (latencies.len() as u64) < total && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                let now = epoch.elapsed().as_nanos() as u64;
                let Some(p) = m.payload() else { continue };
                let due = u64::from_le_bytes(p[..8].try_into().expect("8-byte stamp"));
                if due == WARM_UP {
                    if !warm {
                        warm = true;
                        let _ = ready_tx.send(());
                    }
                } else {
                    latencies.push(now.saturating_sub(due));
                }
            }
        }
        latencies
    });
    let mut payload = payloads(size.max(8), 1).remove(0);
    let send = |payload: &[u8], i: u64| -> Result<(), String> {
        let key = (i % 4096).to_be_bytes();
        let mut record = BaseRecord::to(topic).key(&key[..]).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(format!("produce failed: {e}")),
            }
        }
    };
    // Warm up: one marker per partition's worth of keys, until the consumer has one.
    payload[..8].copy_from_slice(&WARM_UP.to_le_bytes());
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for i in 0..64 {
            send(&payload, i)?;
        }
        let _ = producer.flush(Duration::from_secs(10));
        match ready_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => break,
            Err(_) if Instant::now() < warm_deadline => continue,
            Err(_) => return Err("the consumer never received the warm-up".into()),
        }
    }
    producer.context().acked.lock().expect("ack clock").clear();
    producer
        .context()
        .windows
        .lock()
        .expect("stats windows")
        .clear();
    let mut send_late = Vec::with_capacity(total as usize);
    let begin = epoch.elapsed();
    for i in 0..total {
        let due = begin + Duration::from_secs_f64(i as f64 / rate);
        // Sleep rather than spin until the message is due: on a small machine a spinning
        // sender takes a core from the broker and the clients it measures. A late wake-up
        // counts against the measurement (latency runs from the due time), never for it.
        let left = due.saturating_sub(epoch.elapsed());
        if !left.is_zero() {
            producer.poll(Duration::ZERO);
            std::thread::sleep(due.saturating_sub(epoch.elapsed()));
        }
        payload[..8].copy_from_slice(&(due.as_nanos() as u64).to_le_bytes());
        send_late.push(epoch.elapsed().saturating_sub(due).as_nanos() as u64);
        send(&payload, i)?;
        producer.poll(Duration::ZERO);
    }
    let _ = producer.flush(Duration::from_secs(60));
    let sent_secs = (epoch.elapsed() - begin).as_secs_f64();
    let mut latencies = consumer_thread
        .join()
        .map_err(|_| "consumer panicked".to_string())?;
    if (latencies.len() as u64) < total {
        return Err(format!("received {} of {total}", latencies.len()));
    }
    latencies.sort_unstable();
    send_late.sort_unstable();
    let mut acked = std::mem::take(&mut *producer.context().acked.lock().expect("ack clock"));
    acked.sort_unstable();
    let windows = std::mem::take(&mut *producer.context().windows.lock().expect("stats windows"));
    let median_ms = |i: usize| {
        let mut v: Vec<i64> = windows.iter().map(|w| w[i]).collect();
        v.sort_unstable();
        v.get(v.len() / 2).map_or(0.0, |us| *us as f64 / 1e3)
    };
    Ok(Latency {
        target_msg_s: rate,
        achieved_msg_s: total as f64 / sent_secs,
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
        p999_ms: quantile_ms(&latencies, 0.999),
        max_ms: *latencies.last().unwrap_or(&0) as f64 / 1e6,
        send_late_p50_ms: quantile_ms(&send_late, 0.50),
        send_late_p99_ms: quantile_ms(&send_late, 0.99),
        acked_p50_ms: quantile_ms(&acked, 0.50),
        acked_p99_ms: quantile_ms(&acked, 0.99),
        client_queue_p50_ms: median_ms(0),
        client_queue_p99_ms: median_ms(1),
        rtt_p50_ms: median_ms(2),
        rtt_p99_ms: median_ms(3),
    })
}

/// Commits `partitions` offsets for each of `groups` groups on `topic` (offset = group +
/// partition, so a reader can check them), one synchronous OffsetCommit per group from a
/// standalone librdkafka consumer. Returns the offsets committed per second.
pub fn commit_offsets(
    bootstrap: &str,
    topic: &str,
    groups: usize,
    partitions: i32,
) -> Result<f64, String> {
    let started = Instant::now();
    for g in 0..groups {
        let consumer = group_consumer(bootstrap, &format!("load-{g}"))?;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(topic, p, Offset::Offset(g as i64 + i64::from(p)))
                .map_err(|e| e.to_string())?;
        }
        // A new consumer finds its coordinator in the background; until then librdkafka
        // refuses commits locally.
        let mut attempts = 0;
        loop {
            match consumer.commit(&list, rdkafka::consumer::CommitMode::Sync) {
                Ok(()) => break,
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::WaitingForCoordinator))
                    if attempts < 1000 =>
                {
                    attempts += 1;
                    let _ = consumer.poll(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("commit for group load-{g}: {e}")),
            }
        }
    }
    Ok((groups as f64 * f64::from(partitions)) / started.elapsed().as_secs_f64())
}

/// Whether group `load-{g}` has the offsets [`commit_offsets`] committed.
pub fn check_committed(
    bootstrap: &str,
    topic: &str,
    g: usize,
    partitions: i32,
) -> Result<(), String> {
    let consumer = group_consumer(bootstrap, &format!("load-{g}"))?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    for e in committed.elements() {
        let want = Offset::Offset(g as i64 + i64::from(e.partition()));
        if e.offset() != want {
            return Err(format!(
                "group load-{g} partition {}: {:?}, want {want:?}",
                e.partition(),
                e.offset()
            ));
        }
    }
    Ok(())
}

fn group_consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())
}
