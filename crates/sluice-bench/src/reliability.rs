//! What abuse costs the broker (issue 14): memory under pipelined fetches nobody reads,
//! behaviour at descriptor exhaustion, how long a new connection waits during periodic
//! checkpoints, and how long SIGTERM takes during a large auto-creation. Each starts its own
//! broker, so it can read the process's memory, CPU time and log volume.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::broker::Broker;
use crate::{load, Run};

const MIB: usize = 1 << 20;

/// A request frame: size, api key, version, correlation id, client id, body.
fn frame(api_key: i16, version: i16, corr: i32, body: &[u8]) -> Vec<u8> {
    let client = b"sluice-bench";
    let mut payload = Vec::with_capacity(10 + client.len() + body.len());
    payload.extend_from_slice(&api_key.to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&corr.to_be_bytes());
    payload.extend_from_slice(&(client.len() as i16).to_be_bytes());
    payload.extend_from_slice(client);
    payload.extend_from_slice(body);
    let mut out = (payload.len() as i32).to_be_bytes().to_vec();
    out.extend(payload);
    out
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let mut body = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Connects and sends ApiVersions v0; returns how long until the answer arrived.
fn api_versions_round_trip(bootstrap: &str, s: Option<&mut TcpStream>) -> Result<Duration, String> {
    let started = Instant::now();
    let mut fresh;
    let s = match s {
        Some(s) => s,
        None => {
            fresh = TcpStream::connect(bootstrap).map_err(|e| e.to_string())?;
            fresh
                .set_read_timeout(Some(Duration::from_secs(60)))
                .map_err(|e| e.to_string())?;
            &mut fresh
        }
    };
    s.write_all(&frame(18, 0, 1, &[]))
        .map_err(|e| e.to_string())?;
    read_frame(s).map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

fn fetch_v4(topic: &str, corr: i32, max_bytes: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&0i32.to_be_bytes()); // max wait
    body.extend_from_slice(&0i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&max_bytes.to_be_bytes());
    body.push(0); // isolation level
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes()); // partition
    body.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
    body.extend_from_slice(&max_bytes.to_be_bytes());
    frame(1, 4, corr, &body)
}

fn producer(bootstrap: &str, acks: &str) -> Result<BaseProducer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("queue.buffering.max.kbytes", "65536")
        .create()
        .map_err(|e| e.to_string())
}

/// Produces `bytes` of 64 KiB values to partition 0 of `topic`.
fn fill(bootstrap: &str, topic: &str, bytes: usize) -> Result<(), String> {
    let p = producer(bootstrap, "1")?;
    let value = vec![0x5au8; 64 << 10];
    for _ in 0..bytes / value.len() {
        loop {
            match p.send(BaseRecord::<(), _>::to(topic).payload(&value).partition(0)) {
                Ok(()) => break,
                Err((_, _)) => p.poll(Duration::from_millis(10)),
            }
        }
    }
    p.flush(Duration::from_secs(120)).map_err(|e| e.to_string())
}

/// 64 pipelined Fetch requests of 55 MiB each on a connection that never reads.
fn pipelined_fetches(bin: &Path, dir: &Path, run: &mut Run) -> Result<(), String> {
    let b = Broker::start(bin, dir, &[])?;
    let bootstrap = b.bootstrap();
    load::create_topic(&bootstrap, "big", 1)?;
    fill(&bootstrap, "big", 64 * MIB)?;
    let before = b.rss_mib();
    let mut s = TcpStream::connect(&bootstrap).map_err(|e| e.to_string())?;
    let requests: Vec<u8> = (0..64)
        .flat_map(|corr| fetch_v4("big", corr, 55 * MIB as i32))
        .collect();
    s.write_all(&requests).map_err(|e| e.to_string())?;
    let mut peak = before;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        peak = peak.max(b.rss_mib());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Someone else is served meanwhile.
    let other = api_versions_round_trip(&bootstrap, None)?;
    drop(s);
    run.row(
        "reliability",
        "64 pipelined 55 MiB fetches never read (64 MiB in the partition)",
        format!(
            "RSS {before:.0} MiB before, {peak:.0} MiB peak over 10 s (VmHWM {:.0} MiB)",
            b.peak_rss_mib()
        ),
        format!(
            "another client's ApiVersions meanwhile: {:.1} ms",
            other.as_secs_f64() * 1e3
        ),
    );
    Ok(())
}

/// Counts delivery reports: (acknowledged, failed) since the last [`Deliveries::take`].
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Deliveries {
    fn take(&self) -> (u64, u64) {
        (
            self.ok.swap(0, Ordering::SeqCst),
            self.failed.swap(0, Ordering::SeqCst),
        )
    }
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Raises this process's soft open-file limit to its hard limit.
fn raise_own_nofile() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// 4,112 idle connections against an open-file limit of 4,096 while a producer rolls
/// segments, then the connections close and the producer goes on.
fn descriptor_exhaustion(bin: &Path, dir: &Path, run: &mut Run) -> Result<(), String> {
    raise_own_nofile();
    let b = Broker::start_with_nofile(bin, dir, &[], Some(4096))?;
    let bootstrap = b.bootstrap();
    load::create_topic_with(&bootstrap, "rolls", 1, &[("segment.bytes", "65536")])?;
    let p: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create_with_context(Deliveries::default())
        .map_err(|e| e.to_string())?;
    let value = vec![1u8; 16 << 10];
    let send = |n: usize| -> Result<(u64, u64), String> {
        let (ok, failed) = p.context().take();
        debug_assert_eq!((ok, failed), (0, 0));
        for _ in 0..n {
            loop {
                match p.send(BaseRecord::<(), _>::to("rolls").payload(&value)) {
                    Ok(()) => break,
                    Err(_) => p.poll(Duration::from_millis(10)),
                }
            }
        }
        let _ = p.flush(Duration::from_secs(60));
        Ok(p.context().take())
    };
    send(100)?;
    let (lines_before, bytes_before) = b.logged();
    let cpu_before = b.cpu_seconds();
    let started = Instant::now();
    let mut idle = Vec::new();
    let mut refused_by_os = 0;
    for _ in 0..4112 {
        match TcpStream::connect_timeout(&bootstrap.parse().expect("addr"), Duration::from_secs(2))
        {
            Ok(s) => idle.push(s),
            Err(_) => refused_by_os += 1,
        }
    }
    let during = send(500)?; // 16 KiB each into 64 KiB segments: a roll every 4 messages
    std::thread::sleep(Duration::from_secs(5));
    let cpu = b.cpu_seconds() - cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    let (lines, bytes) = b.logged();
    // Closed on accept reads as end of file; kept open would block.
    let still_open = idle
        .iter_mut()
        .map(|s| {
            s.set_nonblocking(true).ok();
            let mut buf = [0u8; 1];
            matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .filter(|&open| open)
        .count();
    drop(idle);
    let after = send(200)?;
    run.row(
        "reliability",
        "4,112 idle connections at an open-file limit of 4,096, segments rolling",
        format!(
            "{still_open} kept open, {} closed on accept, {refused_by_os} not connected; \
             {} log lines ({} bytes) and {cpu:.2} CPU-s in {elapsed:.0} s",
            4112 - still_open - refused_by_os,
            lines - lines_before,
            bytes - bytes_before,
        ),
        format!(
            "produce during: {} acknowledged, {} failed; after they close: {} acknowledged, \
             {} failed",
            during.0, during.1, after.0, after.1
        ),
    );
    Ok(())
}

/// The longest wait for a new connection's ApiVersions while `partitions` partitions are
/// written and checkpointed every 10 s.
fn checkpoint_stall(bin: &Path, dir: &Path, partitions: i32, run: &mut Run) -> Result<(), String> {
    let b = Broker::start_with_nofile(
        bin,
        dir,
        &["--set", "log.flush.offset.checkpoint.interval.ms=10000"],
        None,
    )?;
    let bootstrap = b.bootstrap();
    load::create_topic(&bootstrap, "wide", partitions)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, bootstrap) = (stop.clone(), bootstrap.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            let p = producer(&bootstrap, "1")?;
            let value = vec![7u8; 1024];
            let mut n = 0u64;
            let mut partition = 0;
            while !stop.load(Ordering::Relaxed) {
                let record = BaseRecord::<(), _>::to("wide")
                    .payload(&value)
                    .partition(partition);
                if p.send(record).is_ok() {
                    n += 1;
                    partition = (partition + 1) % partitions;
                } else {
                    p.poll(Duration::from_millis(5));
                }
            }
            p.flush(Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
            Ok(n)
        })
    };
    let mut open = TcpStream::connect(&bootstrap).map_err(|e| e.to_string())?;
    open.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut new_conn = Vec::new();
    let mut same_conn = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(35) {
        new_conn.push(api_versions_round_trip(&bootstrap, None)?);
        same_conn.push(api_versions_round_trip(&bootstrap, Some(&mut open))?);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().map_err(|_| "producer thread panicked")??;
    let ms = |v: &mut Vec<Duration>| {
        v.sort();
        let p99 = v[(v.len() * 99 / 100).min(v.len() - 1)];
        (
            v.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        )
    };
    let (new_max, new_p99) = ms(&mut new_conn);
    let (same_max, same_p99) = ms(&mut same_conn);
    run.row(
        "reliability",
        format!("ApiVersions while {partitions} partitions are written, checkpoint every 10 s"),
        format!(
            "new connection: max {new_max:.1} ms, p99 {new_p99:.1} ms ({} probes in 35 s)",
            new_conn.len()
        ),
        format!(
            "open connection: max {same_max:.1} ms, p99 {same_p99:.1} ms; {written} records \
             written meanwhile"
        ),
    );
    Ok(())
}

/// A Metadata request naming 20,000 new topics, then SIGTERM while they are created.
fn auto_create_shutdown(bin: &Path, dir: &Path, run: &mut Run) -> Result<(), String> {
    let mut b = Broker::start_with_nofile(
        bin,
        dir,
        &["--set", "auto.create.topics.max.per.request=10000"],
        None,
    )?;
    let mut body = Vec::new();
    body.extend_from_slice(&20_000i32.to_be_bytes());
    for i in 0..20_000 {
        let name = format!("auto-{i:05}");
        body.extend_from_slice(&(name.len() as i16).to_be_bytes());
        body.extend_from_slice(name.as_bytes());
    }
    body.push(1); // allow auto-creation
    let mut s = TcpStream::connect(b.bootstrap()).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    s.write_all(&frame(3, 4, 1, &body))
        .map_err(|e| e.to_string())?;
    let answer = read_frame(&mut s).map_err(|e| e.to_string())?;
    let answered = started.elapsed();
    let stopping = Instant::now();
    b.stop()?;
    let stopped = stopping.elapsed();
    let created = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("auto-"))
        .count();
    run.row(
        "reliability",
        "Metadata naming 20,000 new topics (10,000 may be queued), then SIGTERM",
        format!(
            "answered in {:.0} ms ({} KiB); SIGTERM to exit {:.2} s",
            answered.as_secs_f64() * 1e3,
            answer.len() / 1024,
            stopped.as_secs_f64()
        ),
        format!("{created} topics created before the exit (shutdown.timeout.ms 10,000)"),
    );
    Ok(())
}

pub fn run_all(bin: &Path, data_dir: &Path, quick: bool, run: &mut Run) -> Result<(), String> {
    eprintln!("reliability under abuse");
    let dir = |name: &str| data_dir.join(format!("reliability-{name}"));
    pipelined_fetches(bin, &dir("fetch"), run)?;
    descriptor_exhaustion(bin, &dir("fds"), run)?;
    let widths: &[i32] = if quick { &[2_000] } else { &[2_000, 10_000] };
    for &partitions in widths {
        checkpoint_stall(bin, &dir(&format!("stall-{partitions}")), partitions, run)?;
    }
    auto_create_shutdown(bin, &dir("auto"), run)?;
    Ok(())
}
