//! Faults injected into an in-process broker through its durability seam
//! (`sluice_broker::start_with_durability`), with librdkafka and raw sockets as clients:
//!
//! - a periodic checkpoint stuck in a sync never stops the broker from accepting connections,
//!   answering them, or noticing a shutdown;
//! - an offline log directory (a failed sync) makes `/health/ready` answer 503 with the
//!   reason, shows in the metrics, and refuses topic changes as every write is refused;
//! - with the commit rule held back (`sluice_broker::start_with`, as replication will hold
//!   it), a consumer never receives an uncommitted record, ListOffsets reports the high
//!   watermark, and an acks=all produce is answered only once its records are committed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_broker::BrokerConfig;
use sluice_storage::Durability;

/// How long a step may take before the test fails (generous: CI machines are slow).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..BrokerConfig::default()
    }
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Opens a new connection and sends ApiVersions v0; returns its error code. Fails the test
/// if the answer does not come within `STEP_TIMEOUT`.
fn api_versions_on_a_new_connection(addr: SocketAddr) -> io::Result<i16> {
    let mut s = TcpStream::connect_timeout(&addr, STEP_TIMEOUT)?;
    s.set_read_timeout(Some(STEP_TIMEOUT))?;
    let client_id = b"faults";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    s.write_all(&(body.len() as i32).to_be_bytes())?;
    s.write_all(&body)?;
    let mut head = [0u8; 10];
    s.read_exact(&mut head)?;
    assert_eq!(i32::from_be_bytes(head[4..8].try_into().unwrap()), 7);
    Ok(i16::from_be_bytes(head[8..10].try_into().unwrap()))
}

/// A GET on the admin listener: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, STEP_TIMEOUT).expect("admin connect");
    s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("admin response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Syncs for real, except while closed: then every sync waits until the gate opens.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    changed: Condvar,
    waiting: AtomicUsize,
}

impl Gate {
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        if *closed {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            self.changed.notify_all();
            while *closed {
                closed = self.changed.wait(closed).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn set_closed(&self, value: bool) {
        *self.closed.lock().unwrap() = value;
        self.changed.notify_all();
    }

    /// Waits until some sync is held at the gate.
    fn wait_for_a_held_sync(&self) {
        let closed = self.closed.lock().unwrap();
        let (_guard, timeout) = self
            .changed
            .wait_timeout_while(closed, STEP_TIMEOUT, |_| {
                self.waiting.load(Ordering::SeqCst) == 0
            })
            .unwrap();
        assert!(!timeout.timed_out(), "no sync reached the gate");
    }
}

/// Opens the gate when dropped, so that a failing test unwinds instead of leaving syncs
/// (and the runtime's shutdown) waiting forever.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.set_closed(false);
    }
}

impl Durability for Gate {
    fn sync_file(&self, file: &File) -> io::Result<()> {
        self.pass();
        file.sync_data()
    }
    fn sync_dir(&self, dir: &File) -> io::Result<()> {
        self.pass();
        dir.sync_all()
    }
}

/// While the periodic flush and checkpoint is stuck in a sync (a slow disk, thousands of
/// partitions), a new connection is accepted and its ApiVersions answered, and a shutdown is
/// noticed at once: the listener closes, though the final flush then waits for the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_checkpoint_stalls_neither_accepting_nor_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let mut cfg = config(dir.path());
    cfg.set("log.flush.offset.checkpoint.interval.ms", "200")
        .unwrap();
    let broker = sluice_broker::start_with_durability(cfg, Some(gate.clone()))
        .await
        .expect("broker starts");
    let addr = broker.local_addr();
    let bootstrap = addr.to_string();
    let producer: FutureProducer = client(&bootstrap).set("acks", "1").create().unwrap();
    producer
        .send(
            FutureRecord::<(), _>::to("stuck").payload("x"),
            STEP_TIMEOUT,
        )
        .await
        .expect("produced");
    // The next checkpoint has that record to sync, and stops at the closed gate.
    gate.set_closed(true);
    let _reopen = OpenOnDrop(gate.clone());
    let held = gate.clone();
    tokio::task::spawn_blocking(move || held.wait_for_a_held_sync())
        .await
        .unwrap();
    let answered = tokio::task::spawn_blocking(move || api_versions_on_a_new_connection(addr))
        .await
        .unwrap();
    assert_eq!(
        answered.expect("a new connection is answered while the checkpoint is stuck"),
        0
    );
    // Shutdown: the listener goes at once, although the final flush has to wait.
    let stopping = tokio::spawn(broker.shutdown());
    let refused = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })
    .await
    .unwrap();
    assert!(refused, "the listener stayed open after shutdown began");
    gate.set_closed(false);
    tokio::time::timeout(STEP_TIMEOUT, stopping)
        .await
        .expect("shutdown finishes once the disk answers")
        .unwrap()
        .expect("clean shutdown");
}

/// Syncs for real until told to fail, then fails every sync.
#[derive(Debug, Default)]
struct FailOnDemand(AtomicBool);

impl Durability for FailOnDemand {
    fn sync_file(&self, file: &File) -> io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected sync failure"));
        }
        file.sync_data()
    }
    fn sync_dir(&self, dir: &File) -> io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected sync failure"));
        }
        dir.sync_all()
    }
}

/// After a failed sync takes the log directory offline, `/health/ready` is 503 and says why,
/// `sluice_log_directories_offline` is 1, and creating or deleting a topic is refused with
/// KAFKA_STORAGE_ERROR like every produce. Before the failure the broker is ready and the
/// gauge is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_log_directory_makes_the_broker_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let durability = Arc::new(FailOnDemand::default());
    let broker = sluice_broker::start_with_durability(config(dir.path()), Some(durability.clone()))
        .await
        .expect("broker starts");
    let bootstrap = broker.local_addr().to_string();
    let admin_addr = broker.admin_addr().expect("admin listener");
    let admin: AdminClient<DefaultClientContext> = client(&bootstrap).create().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(STEP_TIMEOUT));
    let topic = NewTopic::new("kept", 1, TopicReplication::Fixed(1));
    let created = admin.create_topics([&topic], &options).await.unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let producer: FutureProducer = client(&bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "3000")
        .create()
        .unwrap();
    producer
        .send(FutureRecord::<(), _>::to("kept").payload("a"), STEP_TIMEOUT)
        .await
        .expect("acknowledged while the disk works");
    let ready = tokio::task::spawn_blocking(move || {
        // The coordinators load just after the listener opens.
        for _ in 0..200 {
            let (status, body) = http_get(admin_addr, "/health/ready");
            if status == 200 {
                return (status, body);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        http_get(admin_addr, "/health/ready")
    })
    .await
    .unwrap();
    assert_eq!(ready.0, 200, "{}", ready.1);
    let metrics = tokio::task::spawn_blocking(move || http_get(admin_addr, "/metrics"))
        .await
        .unwrap();
    assert!(
        metrics.1.contains("sluice_log_directories_offline 0"),
        "{}",
        metrics.1
    );

    durability.0.store(true, Ordering::SeqCst);
    let failed = producer
        .send(FutureRecord::<(), _>::to("kept").payload("b"), STEP_TIMEOUT)
        .await;
    assert!(
        failed.is_err(),
        "a produce whose sync failed was acknowledged"
    );

    let (status, body) = tokio::task::spawn_blocking(move || http_get(admin_addr, "/health/ready"))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["log_directory_online"], false);
    assert!(
        body["reasons"][0].as_str().unwrap().contains("offline"),
        "{body}"
    );
    let metrics = tokio::task::spawn_blocking(move || http_get(admin_addr, "/metrics"))
        .await
        .unwrap();
    assert!(
        metrics.1.contains("sluice_log_directories_offline 1"),
        "{}",
        metrics.1
    );

    let deleted = admin.delete_topics(&["kept"], &options).await.unwrap();
    assert_eq!(
        deleted[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::KafkaStorageError,
        "{deleted:?}"
    );
    let topic = NewTopic::new("later", 1, TopicReplication::Fixed(1));
    let created = admin.create_topics([&topic], &options).await.unwrap();
    assert_eq!(
        created[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::KafkaStorageError,
        "{created:?}"
    );
    // The topic is still there: nothing changed while offline.
    assert!(dir.path().join("kept-0").exists());
    // The final flush cannot sync either; shutdown reports it.
    assert!(broker.shutdown().await.is_err());
}

/// Readers see only committed records, whatever the log holds: with the broker's commit
/// rule held, a record produced with acks=1 is in the log but a librdkafka consumer reading
/// from the beginning gets nothing and ListOffsets says the partition ends at 0; once
/// released, the consumer gets it. An acks=all produce is not answered while its record is
/// uncommitted, and is answered (successfully) once it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_only_committed_records() {
    let dir = tempfile::tempdir().unwrap();
    let rule = Arc::new(sluice_partition::ManualCommit::default());
    let seams = sluice_broker::Seams {
        commit: Some(rule.clone()),
        ..sluice_broker::Seams::default()
    };
    let broker = sluice_broker::start_with(config(dir.path()), seams)
        .await
        .expect("broker starts");
    let bootstrap = broker.local_addr().to_string();
    let admin: AdminClient<DefaultClientContext> = client(&bootstrap).create().unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new("held", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    rule.hold();
    let producer: FutureProducer = client(&bootstrap).set("acks", "1").create().unwrap();
    producer
        .send(
            FutureRecord::<(), _>::to("held").payload("one"),
            STEP_TIMEOUT,
        )
        .await
        .expect("acks=1 is answered once the record is appended");
    assert_eq!(rule.pending(), 1, "the append waits for its commit");

    let consumer: BaseConsumer = client(&bootstrap)
        .set("group.id", "held-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("held", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let consumer = Arc::new(consumer);
    let watermarks = {
        let c = consumer.clone();
        tokio::task::spawn_blocking(move || c.fetch_watermarks("held", 0, STEP_TIMEOUT))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        watermarks,
        (0, 0),
        "ListOffsets reported an uncommitted end"
    );
    // A second of fetches (each long poll 50 ms) sees nothing.
    let seen = {
        let c = consumer.clone();
        tokio::task::spawn_blocking(move || {
            let until = std::time::Instant::now() + Duration::from_secs(1);
            let mut seen = 0;
            while std::time::Instant::now() < until {
                if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                    seen += 1;
                }
            }
            seen
        })
        .await
        .unwrap()
    };
    assert_eq!(seen, 0, "a consumer received an uncommitted record");

    // acks=all: not answered while held.
    let all: FutureProducer = client(&bootstrap).set("acks", "all").create().unwrap();
    let sending = tokio::spawn(async move {
        all.send(
            FutureRecord::<(), _>::to("held").payload("two"),
            STEP_TIMEOUT,
        )
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e.to_string())
    });
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    while rule.pending() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the acks=all record never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !sending.is_finished(),
        "acks=all was answered before the commit"
    );
    rule.release();
    let delivered = tokio::time::timeout(STEP_TIMEOUT, sending)
        .await
        .expect("acks=all answered after the commit")
        .unwrap();
    assert_eq!(delivered, Ok((0, 1)));

    let received = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + STEP_TIMEOUT;
        let mut values = Vec::new();
        while values.len() < 2 && std::time::Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            }
        }
        values
    })
    .await
    .unwrap();
    assert_eq!(received, vec!["one".to_string(), "two".to_string()]);
    broker.shutdown().await.expect("clean shutdown");
}
