//! Many partitions on one node (issue 16): a broker with the open-file limit at 20,000 holds
//! 100,000 partitions (10,000 with `--quick`) in topics of 1,000. Reports the time to create
//! them, the broker's memory and open descriptors, and the start-up time after a clean
//! shutdown and after kill -9 (recovery).

use std::path::Path;
use std::time::Instant;

use crate::broker::Broker;
use crate::{load, Run};

/// The open-file limit of the run, as in the report.
const NOFILE: u64 = 20_000;
const PER_TOPIC: i32 = 1_000;
const RECORD_BYTES: usize = 1_024;

fn open_descriptors(b: &Broker) -> usize {
    b.pid()
        .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .map_or(0, |d| d.count())
}

pub fn run(bin: &Path, data_dir: &Path, quick: bool, run: &mut Run) -> Result<(), String> {
    let partitions: i32 = if quick { 10_000 } else { 100_000 };
    let topics = partitions / PER_TOPIC;
    eprintln!("{partitions} partitions at an open-file limit of {NOFILE}");
    let dir = data_dir.join("partitions");
    let _ = std::fs::remove_dir_all(&dir);
    let mut b = Broker::start_with_nofile(bin, &dir, &[], Some(NOFILE))?;
    let bootstrap = b.bootstrap();
    let started = Instant::now();
    for t in 0..topics {
        load::create_topic_with(&bootstrap, &format!("wide-{t:03}"), PER_TOPIC, &[])?;
    }
    let created = started.elapsed();
    let (rss_created, fds_created) = (b.rss_mib(), open_descriptors(&b));
    run.row(
        "partitions",
        format!("create {partitions} partitions ({topics} topics of {PER_TOPIC})"),
        format!("{:.1} s", created.as_secs_f64()),
        format!("RSS {rss_created:.0} MiB, {fds_created} descriptors open"),
    );

    let clean = b.restart()?;
    run.row(
        "partitions",
        format!("start after a clean shutdown, {partitions} partitions"),
        format!("{:.1} s", clean.as_secs_f64()),
        format!(
            "RSS {:.0} MiB, {} descriptors open",
            b.rss_mib(),
            open_descriptors(&b)
        ),
    );
    let recovered = b.crash_restart()?;
    run.row(
        "partitions",
        format!("start after kill -9 (recovery), {partitions} partitions"),
        format!("{:.1} s", recovered.as_secs_f64()),
        format!(
            "RSS {:.0} MiB, {} descriptors open",
            b.rss_mib(),
            open_descriptors(&b)
        ),
    );
    b.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A large log: 1 KB records into 16 partitions in batches of Kafka's default client
/// `batch.size` (16 KiB, so an index entry every 16 records), then the broker's memory after a
/// clean restart and after reading everything back: what indexes cost per GB of data.
pub fn large_log(bin: &Path, data_dir: &Path, quick: bool, run: &mut Run) -> Result<(), String> {
    let gib: usize = if quick { 2 } else { 16 };
    eprintln!("a large log: {gib} GiB of 1 KB records");
    let dir = data_dir.join("large-log");
    let _ = std::fs::remove_dir_all(&dir);
    let mut b = Broker::start(bin, &dir, &[])?;
    let bootstrap = b.bootstrap();
    load::create_topic(&bootstrap, "large", 16)?;
    let spec = load::ProduceSpec {
        size: RECORD_BYTES,
        partitions: 16,
        acks: "1",
        compression: "none",
        bytes: gib << 30,
    };
    let produced =
        load::produce_with_settings(&bootstrap, "large", spec, &[("batch.size", "16384")])?;
    let rss_written = b.rss_mib();
    b.restart()?;
    let rss_restarted = b.rss_mib();
    let consumed = load::consume_backlog(&bootstrap, "large", 16, produced.messages)?;
    let rss_read = b.rss_mib();
    run.row(
        "partitions",
        format!("{gib} GiB of 1 KB records in 16 partitions, 16 KiB batches: broker RSS"),
        format!(
            "{rss_written:.0} MiB written, {rss_restarted:.0} MiB after a clean restart, \
             {rss_read:.0} MiB after reading it all"
        ),
        format!(
            "{:.1} MiB per GiB after the restart; produced at {:.0} MB/s, read at {:.0} MB/s",
            rss_restarted / gib as f64,
            produced.mb_s,
            consumed.mb_s
        ),
    );
    b.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
