//! The rdkafka crate (bundled librdkafka) against the real `sluice` binary: a 3-partition
//! topic, 10,000 keyed messages with acks=all in every codec, consumed back with keys, values,
//! headers and timestamps intact and in per-partition order, ListOffsets by timestamp, a
//! restart, and an idempotent producer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_integration::Broker;

const N: usize = 10_000;
const PARTITIONS: i32 = 3;
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const BASE_TS: i64 = 1_650_000_000_000;

/// One consumed message: (partition, offset) → (key, value, headers, timestamp).
type Log = BTreeMap<(i32, i64), (Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>, i64)>;

fn timestamp(codec: usize, i: usize) -> i64 {
    BASE_TS + codec as i64 * 1_000_000 + i as i64
}

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

async fn create_topic(bootstrap: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().unwrap();
    let topic = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

async fn produce(bootstrap: &str, topic: &str, codec: usize, extra: &[(&str, &str)]) {
    let mut c = config(bootstrap);
    c.set("acks", "all")
        .set("compression.type", CODECS[codec])
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let producer: FutureProducer = c.create().unwrap();
    let mut pending = Vec::with_capacity(N);
    for i in 0..N {
        let key = format!("key-{}", i % 97);
        let value = format!("{}-{i:06}", CODECS[codec]);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "codec",
                value: Some(CODECS[codec]),
            })
            .insert(Header {
                key: "seq",
                value: Some(&i.to_string()),
            });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers)
            .timestamp(timestamp(codec, i));
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for delivery in pending {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn consume_all(bootstrap: &str, topic: &str, expected: usize) -> Log {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", "assign-only")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut log = Log::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while log.len() < expected && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let entry = (
            m.key().unwrap().to_vec(),
            m.payload().unwrap().to_vec(),
            headers,
            m.timestamp().to_millis().unwrap(),
        );
        assert!(
            log.insert((m.partition(), m.offset()), entry).is_none(),
            "delivered twice"
        );
    }
    log
}

/// Everything produced is consumed once, with dense offsets, per-partition production order,
/// one partition per key, and headers and timestamps as produced.
fn check(log: &Log) {
    assert_eq!(log.len(), N * CODECS.len());
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut last_seq: HashMap<(i32, String), usize> = HashMap::new();
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut values = HashSet::new();
    for (&(p, offset), (key, value, headers, ts)) in log {
        let expected = next_offset.entry(p).or_insert(0);
        assert_eq!(offset, *expected, "partition {p} offsets are dense");
        *expected += 1;
        assert_eq!(*key_partition.entry(key.clone()).or_insert(p), p);
        let value = String::from_utf8(value.clone()).unwrap();
        let (codec, seq) = value.split_once('-').unwrap();
        let seq: usize = seq.parse().unwrap();
        let codec_index = CODECS.iter().position(|c| *c == codec).unwrap();
        let previous = last_seq.insert((p, codec.to_string()), seq);
        assert!(
            previous.is_none_or(|prev| prev < seq),
            "partition {p} out of order at {value}"
        );
        assert_eq!(*key, format!("key-{}", seq % 97).into_bytes());
        assert_eq!(
            *headers,
            vec![
                ("codec".into(), codec.as_bytes().to_vec()),
                ("seq".into(), seq.to_string().into_bytes())
            ]
        );
        assert_eq!(*ts, timestamp(codec_index, seq));
        assert!(values.insert(value));
    }
    assert_eq!(
        next_offset.len(),
        PARTITIONS as usize,
        "keys spread over every partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_round_trip_in_every_codec_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let topic = "rdkafka-orders";
    create_topic(&broker.bootstrap(), topic).await;
    for codec in 0..CODECS.len() {
        produce(&broker.bootstrap(), topic, codec, &[]).await;
    }
    let log = consume_all(&broker.bootstrap(), topic, N * CODECS.len());
    check(&log);

    // ListOffsets by timestamp agrees with what was consumed.
    let consumer: BaseConsumer = config(&broker.bootstrap())
        .set("group.id", "assign-only")
        .create()
        .unwrap();
    for target in [BASE_TS, timestamp(3, 5_000), timestamp(4, N)] {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Offset(target))
                .unwrap();
        }
        let found = consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .unwrap();
        for e in found.elements() {
            let want = log
                .iter()
                .filter(|((p, _), v)| *p == e.partition() && v.3 >= target)
                .map(|((_, o), _)| *o)
                .min();
            let got = match e.offset() {
                Offset::Offset(o) => Some(o),
                Offset::End => None,
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, want, "partition {} target {target}", e.partition());
        }
    }

    broker.restart();
    assert_eq!(
        consume_all(&broker.bootstrap(), topic, N * CODECS.len()),
        log
    );
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_idempotent_producer_writes_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let topic = "rdkafka-idempotent";
    create_topic(&broker.bootstrap(), topic).await;
    produce(
        &broker.bootstrap(),
        topic,
        0,
        &[("enable.idempotence", "true")],
    )
    .await;
    let log = consume_all(&broker.bootstrap(), topic, N);
    assert_eq!(log.len(), N);
    let distinct: HashSet<_> = log.values().map(|v| v.1.clone()).collect();
    assert_eq!(distinct.len(), N);
    broker.stop();
}
