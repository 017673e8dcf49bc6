//! `sluice consume`: the records of a topic on stdout, one line each.
//!
//! Alone, it reads the partitions asked for from the position asked for. With `--group` it is
//! a member of that consumer group (see `group_member`): it reads the partitions the group
//! assigns it from the group's committed offsets, commits after each fetch what it has
//! written to stdout, commits and rejoins when the group rebalances, and leaves the group
//! when it stops.
//!
//! Fetched bytes are parsed with `sluice_records`: each batch is checked by CRC and
//! decompressed, control batches (transaction markers) are skipped, batches of aborted
//! transactions are dropped under read_committed, and a batch cut off at the end of a fetch
//! is fetched again whole the next time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use serde_json::{Map, Value};
use sluice_records::{
    control_type, BatchError, BatchHeader, BatchIter, ControlType, Record, TimestampType,
};

use crate::client::Client;
use crate::group_member::{GroupMember, Heartbeat};
use crate::requests::{
    check, clamp_offset, partition_ids, s, topic_metadata, topic_offsets, BrokerArgs, EARLIEST,
    LATEST,
};

/// How long the broker may hold a fetch that has nothing new.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// Bytes asked for in one fetch, and per partition. Kafka returns the first batch whole even
/// when it is larger, so a large record never stalls the consumer.
const FETCH_MAX_BYTES: i32 = 16 << 20;
const PARTITION_FETCH_MAX_BYTES: i32 = 1 << 20;
/// The most one batch may decompress to.
const BATCH_DECOMPRESSED_MAX_BYTES: usize = 64 << 20;
/// The largest base offset whose records' offsets (base + an i32 delta, + 1) cannot overflow.
const BASE_OFFSET_MAX: i64 = i64::MAX - (1 << 32);

#[derive(clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The topic.
    topic: String,
    /// Read only this partition [default: every partition].
    #[arg(long, value_name = "N", conflicts_with = "group")]
    partition: Option<i32>,
    /// Start at each partition's log start offset. With --group: where the group has
    /// committed nothing (otherwise the log end).
    #[arg(long, group = "start")]
    from_beginning: bool,
    /// Start at this offset in every partition read, clamped to the log's range.
    #[arg(long, value_name = "OFFSET", group = "start", conflicts_with = "group",
          value_parser = clap::value_parser!(i64).range(0..))]
    offset: Option<i64>,
    /// Start at the first record whose timestamp is at or after this time (milliseconds
    /// since the epoch); at the log end where there is none.
    // Negative values are ListOffsets' sentinels (latest, earliest, …), not times.
    #[arg(long, value_name = "MS", group = "start", conflicts_with = "group",
          value_parser = clap::value_parser!(i64).range(0..))]
    timestamp: Option<i64>,
    /// Consume as a member of this consumer group: read the partitions it assigns, from its
    /// committed offsets, and commit what was printed.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Stop after printing this many records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Stop after this many milliseconds without a new record. Without it or
    /// --max-messages, run until interrupted.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// How each record is printed: its value; key, separator and value; or a JSON object
    /// (topic, partition, offset, timestamp, timestamp_type, key, value, headers; bytes as
    /// UTF-8 text, or as hex where they are not UTF-8, which each `*_encoding` field says).
    #[arg(long, value_enum, default_value_t)]
    format: RecordFormat,
    /// What separates key and value with --format kv.
    #[arg(long, value_name = "SEP", default_value = ":")]
    key_separator: String,
    /// read_committed: only records of committed transactions, up to the last stable offset.
    #[arg(long, value_enum, default_value_t)]
    isolation: Isolation,
}

#[derive(clap::ValueEnum, Clone, Copy, Default, PartialEq, Eq)]
enum RecordFormat {
    #[default]
    Value,
    Kv,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Default, PartialEq, Eq)]
enum Isolation {
    #[default]
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
    #[value(name = "read_committed")]
    ReadCommitted,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Turns the first SIGINT or SIGTERM into a clean stop (commit, leave the group); a second
/// one kills the process as usual.
fn stop_on_interrupt() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the struct is
    // fully initialised before use and only read by sigaction.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int) = on_interrupt;
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

/// The records of one partition's fetched bytes, and where to fetch from after them.
#[derive(Debug)]
struct Fetched {
    records: Vec<(TimestampType, Record)>,
    /// The offset after the last whole batch: past skipped control and aborted batches.
    next_position: i64,
}

/// Parses one partition's fetched bytes: the records at or after `position`, in order.
/// `aborted` holds the (first offset, producer id) of each aborted transaction the broker
/// listed; it is used only under read_committed.
fn parse_fetched(
    bytes: &[u8],
    position: i64,
    aborted: &[(i64, i64)],
    read_committed: bool,
) -> Result<Fetched, String> {
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec();
    aborted.sort_unstable();
    let mut aborted = aborted.into_iter().peekable();
    let mut aborted_producers = BTreeSet::new();
    let mut fetched = Fetched {
        records: Vec::new(),
        next_position: position,
    };
    let mut whole_batches = 0;
    for batch in BatchIter::new(bytes) {
        let batch = match batch {
            Ok(batch) => batch,
            // The broker cuts the last batch at the size limit; it comes whole next time.
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(format!("offset {}: {e}", fetched.next_position)),
        };
        whole_batches += 1;
        let header = BatchHeader::validate_stored(batch)
            .map_err(|e| format!("batch after offset {}: {e}", fetched.next_position))?;
        if !(0..=BASE_OFFSET_MAX).contains(&header.base_offset) {
            return Err(format!(
                "batch with impossible base offset {}",
                header.base_offset
            ));
        }
        // The broker starts at the batch holding `position`, which may begin before it.
        if header.next_offset() <= position {
            continue;
        }
        fetched.next_position = fetched.next_position.max(header.next_offset());
        // Kafka's consumer: a transaction is aborted from its first offset to its abort
        // marker; batches of its producer in between are not shown.
        if read_committed && header.producer_id >= 0 {
            while let Some((_, producer)) =
                aborted.next_if(|(first, _)| *first <= header.last_offset())
            {
                aborted_producers.insert(producer);
            }
            if header.is_control() {
                if control_type(&header, batch).map_err(|e| e.to_string())? == ControlType::Abort {
                    aborted_producers.remove(&header.producer_id);
                }
            } else if header.is_transactional() && aborted_producers.contains(&header.producer_id) {
                continue;
            }
        }
        if header.is_control() {
            continue;
        }
        let records = header
            .records(batch, BATCH_DECOMPRESSED_MAX_BYTES)
            .map_err(|e| format!("batch at offset {}: {e}", header.base_offset))?;
        let timestamp_type = header.timestamp_type();
        fetched.records.extend(
            records
                .into_iter()
                .filter(|r| r.offset >= position)
                .map(|r| (timestamp_type, r)),
        );
    }
    if whole_batches == 0 && !bytes.is_empty() {
        return Err(format!(
            "the broker sent part of the batch at offset {position} ({} bytes) and nothing \
             whole",
            bytes.len()
        ));
    }
    Ok(fetched)
}

/// Bytes as JSON: UTF-8 text where they are, hex where not; `(value, encoding)`.
fn bytes_json(bytes: Option<&[u8]>) -> (Value, Value) {
    match bytes {
        None => (Value::Null, Value::Null),
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => (text.into(), "utf8".into()),
            Err(_) => {
                let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
                (hex.into(), "hex".into())
            }
        },
    }
}

/// Sets `name` and `name_encoding` in `object`.
fn put_bytes(object: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>) {
    let (value, encoding) = bytes_json(bytes);
    object.insert(name.to_string(), value);
    object.insert(format!("{name}_encoding"), encoding);
}

fn record_json(topic: &str, partition: i32, timestamp_type: TimestampType, r: &Record) -> Value {
    let mut object = Map::new();
    object.insert("topic".into(), topic.into());
    object.insert("partition".into(), partition.into());
    object.insert("offset".into(), r.offset.into());
    object.insert("timestamp".into(), r.timestamp.into());
    let timestamp_type = match timestamp_type {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    };
    object.insert("timestamp_type".into(), timestamp_type.into());
    put_bytes(&mut object, "key", r.key.as_deref());
    put_bytes(&mut object, "value", r.value.as_deref());
    let headers = r
        .headers
        .iter()
        .map(|h| {
            let mut header = Map::new();
            header.insert("key".into(), h.key.clone().into());
            put_bytes(&mut header, "value", h.value.as_deref());
            Value::Object(header)
        })
        .collect();
    object.insert("headers".into(), Value::Array(headers));
    Value::Object(object)
}

/// When to stop.
struct Limits {
    max_messages: Option<u64>,
    idle_timeout: Option<Duration>,
}

impl Limits {
    fn records_left(&self, printed: u64) -> Option<u64> {
        self.max_messages.map(|max| max.saturating_sub(printed))
    }

    /// Until the idle timeout, counted from the last record; `Duration::MAX` without one.
    fn idle_left(&self, last_record: Instant) -> Duration {
        self.idle_timeout.map_or(Duration::MAX, |timeout| {
            timeout.saturating_sub(last_record.elapsed())
        })
    }
}

struct Consumer<W: Write> {
    client: Client,
    topic: String,
    format: RecordFormat,
    key_separator: Vec<u8>,
    read_committed: bool,
    /// Where a partition starts over when its position is out of range, and where a group
    /// member starts a partition the group has committed nothing for.
    reset_to: i64,
    /// The next offset to read in each partition read.
    positions: BTreeMap<i32, i64>,
    printed: u64,
    out: W,
}

impl<W: Write> Consumer<W> {
    fn print(
        &mut self,
        partition: i32,
        timestamp_type: TimestampType,
        r: &Record,
    ) -> Result<(), String> {
        let value = r.value.as_deref().unwrap_or_default();
        let written = match self.format {
            RecordFormat::Value => self.out.write_all(value),
            RecordFormat::Kv => self
                .out
                .write_all(r.key.as_deref().unwrap_or_default())
                .and_then(|()| self.out.write_all(&self.key_separator))
                .and_then(|()| self.out.write_all(value)),
            RecordFormat::Json => serde_json::to_writer(
                &mut self.out,
                &record_json(&self.topic, partition, timestamp_type, r),
            )
            .map_err(std::io::Error::other),
        };
        written
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| format!("writing to stdout: {e}"))?;
        self.printed += 1;
        Ok(())
    }

    /// One fetch of every partition read; prints at most `records_left` records. Returns how
    /// many it printed, all of them flushed to stdout.
    fn fetch(&mut self, max_wait: Duration, records_left: Option<u64>) -> Result<u64, String> {
        let partitions = self
            .positions
            .iter()
            .map(|(p, position)| {
                FetchPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(*position)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(PARTITION_FETCH_MAX_BYTES)
            })
            .collect();
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_isolation_level(i8::from(self.read_committed))
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s(&self.topic)))
                .with_partitions(partitions)])
            .with_rack_id(s(""));
        let resp: FetchResponse = self.client.call(ApiKey::Fetch, &req)?;
        check(resp.error_code, "Fetch")?;
        let printed_before = self.printed;
        let limit = records_left.map(|n| self.printed.saturating_add(n));
        let topic = self.topic.clone();
        let answers = resp
            .responses
            .into_iter()
            .filter(|t| t.topic.as_str() == topic)
            .flat_map(|t| t.partitions);
        for answer in answers {
            let p = answer.partition_index;
            let Some(&position) = self.positions.get(&p) else {
                continue;
            };
            if answer.error_code == ResponseError::OffsetOutOfRange.code() {
                self.reset(p, position)?;
                continue;
            }
            check(answer.error_code, &format!("Fetch {}-{p}", self.topic))?;
            let aborted: Vec<(i64, i64)> = answer
                .aborted_transactions
                .unwrap_or_default()
                .iter()
                .map(|a| (a.first_offset, a.producer_id.0))
                .collect();
            let fetched = parse_fetched(
                answer.records.as_deref().unwrap_or_default(),
                position,
                &aborted,
                self.read_committed,
            )
            .map_err(|e| format!("{}-{p}: {e}", self.topic))?;
            let mut next = position;
            let mut all_printed = true;
            for (timestamp_type, r) in &fetched.records {
                if limit.is_some_and(|limit| self.printed >= limit) {
                    all_printed = false;
                    break;
                }
                self.print(p, *timestamp_type, r)?;
                next = r.offset.saturating_add(1);
            }
            if all_printed {
                next = next.max(fetched.next_position);
            }
            self.positions.insert(p, next);
        }
        self.out
            .flush()
            .map_err(|e| format!("writing to stdout: {e}"))?;
        Ok(self.printed - printed_before)
    }

    /// Starts a partition over after OFFSET_OUT_OF_RANGE (its records were deleted under it,
    /// or it was truncated), as Kafka's `auto.offset.reset` does.
    fn reset(&mut self, partition: i32, position: i64) -> Result<(), String> {
        let to = topic_offsets(&mut self.client, &self.topic, &[partition], self.reset_to)?;
        for (p, offset) in to {
            eprintln!(
                "sluice: {}-{p}: offset {position} is out of range; continuing at {offset}",
                self.topic
            );
            self.positions.insert(p, offset);
        }
        Ok(())
    }

    /// Joins (or rejoins) the group and starts each assigned partition at its committed
    /// offset, or at `reset_to` where there is none. Returns what the group has committed.
    fn assign(&mut self, member: &mut GroupMember) -> Result<BTreeMap<i32, i64>, String> {
        let partitions = member.join(&mut self.client)?;
        let committed = member.committed(&partitions)?;
        let missing: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !committed.contains_key(p))
            .collect();
        self.positions = committed.clone();
        if !missing.is_empty() {
            let starts = topic_offsets(&mut self.client, &self.topic, &missing, self.reset_to)?;
            self.positions.extend(starts);
        }
        Ok(committed)
    }

    /// Commits the positions that moved since `committed`, which is then brought up to date.
    fn commit(
        &mut self,
        member: &mut GroupMember,
        committed: &mut BTreeMap<i32, i64>,
    ) -> Result<(), String> {
        let moved: BTreeMap<i32, i64> = self
            .positions
            .iter()
            .filter(|(p, o)| committed.get(p) != Some(o))
            .map(|(p, o)| (*p, *o))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        if member.commit(&moved)? {
            committed.extend(moved);
        } else {
            eprintln!(
                "sluice: the group rebalanced before offsets were committed: records printed \
                 since the last commit will be read again"
            );
        }
        Ok(())
    }

    /// Fetches and prints until a limit is reached or the process is interrupted.
    fn run(&mut self, mut member: Option<&mut GroupMember>, limits: &Limits) -> Result<(), String> {
        let mut committed = BTreeMap::new();
        if let Some(m) = member.as_deref_mut() {
            committed = self.assign(m)?;
        }
        let mut last_record = Instant::now();
        loop {
            let idle_left = limits.idle_left(last_record);
            if INTERRUPTED.load(Ordering::Relaxed)
                || limits.records_left(self.printed) == Some(0)
                || idle_left.is_zero()
            {
                break;
            }
            let mut wait = FETCH_MAX_WAIT.min(idle_left);
            if let Some(m) = member.as_deref_mut() {
                if m.heartbeat()? == Heartbeat::Rejoin {
                    self.commit(m, &mut committed)?;
                    committed = self.assign(m)?;
                }
                wait = wait.min(m.until_heartbeat());
            }
            if self.positions.is_empty() {
                // A member the group assigned nothing: only heartbeats to send.
                std::thread::sleep(wait);
                continue;
            }
            if self.fetch(wait, limits.records_left(self.printed))? > 0 {
                last_record = Instant::now();
            }
            if let Some(m) = member.as_deref_mut() {
                self.commit(m, &mut committed)?;
            }
        }
        if let Some(m) = member {
            self.commit(m, &mut committed)?;
        }
        Ok(())
    }
}

/// Where each partition starts without a group: `--offset` (clamped to the log),
/// `--timestamp` (the log end where no record is that late), `--from-beginning`, or the log
/// end.
fn start_positions(
    client: &mut Client,
    args: &ConsumeArgs,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, String> {
    let topic = &args.topic;
    if let Some(offset) = args.offset {
        let starts = topic_offsets(client, topic, partitions, EARLIEST)?;
        let ends = topic_offsets(client, topic, partitions, LATEST)?;
        // Both hold exactly `partitions`, so they pair up in order.
        return starts
            .into_iter()
            .zip(ends.into_values())
            .map(|((p, start), end)| Ok((p, clamp_offset(offset, start, end)?)))
            .collect();
    }
    if let Some(timestamp) = args.timestamp {
        let found = topic_offsets(client, topic, partitions, timestamp)?;
        let ends = topic_offsets(client, topic, partitions, LATEST)?;
        return Ok(found
            .into_iter()
            .zip(ends.into_values())
            .map(|((p, at), end)| (p, if at < 0 { end } else { at }))
            .collect());
    }
    let timestamp = if args.from_beginning {
        EARLIEST
    } else {
        LATEST
    };
    topic_offsets(client, topic, partitions, timestamp)
}

pub fn run(args: ConsumeArgs) -> Result<(), String> {
    let mut client = args.broker.connect()?;
    let ids = partition_ids(&topic_metadata(&mut client, &args.topic, false)?)?;
    let limits = Limits {
        max_messages: args.max_messages,
        idle_timeout: args.timeout_ms.map(Duration::from_millis),
    };
    stop_on_interrupt();
    let mut consumer = Consumer {
        client,
        topic: args.topic.clone(),
        format: args.format,
        key_separator: args.key_separator.clone().into_bytes(),
        read_committed: args.isolation == Isolation::ReadCommitted,
        reset_to: if args.from_beginning {
            EARLIEST
        } else {
            LATEST
        },
        positions: BTreeMap::new(),
        printed: 0,
        out: BufWriter::new(std::io::stdout().lock()),
    };
    let result = match &args.group {
        None => {
            let partitions = match args.partition {
                Some(p) if ids.contains(&p) => vec![p],
                Some(p) => return Err(format!("topic {} has no partition {p}", args.topic)),
                None => ids,
            };
            start_positions(&mut consumer.client, &args, &partitions).and_then(|positions| {
                consumer.positions = positions;
                consumer.run(None, &limits)
            })
        }
        Some(group) => {
            let mut member = GroupMember::connect(&mut consumer.client, group, &args.topic)?;
            let result = consumer.run(Some(&mut member), &limits);
            // Leave after an error too, so the group need not wait out our session.
            let left = member.leave();
            result.and(left)
        }
    };
    eprintln!("{} record(s) consumed", consumer.printed);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_records::{marker_batch, patch_base_offset, BatchBuilder, NewRecord};

    /// An uncompressed batch of `n` records at `base_offset`, values `v<offset>`.
    fn batch(base_offset: i64, n: i64, producer: Option<i64>) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        if let Some(id) = producer {
            b.producer(id, 0, 0).transactional();
        }
        for i in 0..n {
            b.push(NewRecord {
                value: Some(format!("v{}", base_offset + i).into_bytes()),
                ..NewRecord::default()
            });
        }
        let mut bytes = b.build();
        patch_base_offset(&mut bytes, base_offset);
        bytes
    }

    fn marker(offset: i64, producer: i64, commit: bool) -> Vec<u8> {
        let mut bytes = marker_batch(producer, 0, commit, 0, 1_000);
        patch_base_offset(&mut bytes, offset);
        bytes
    }

    fn values(f: &Fetched) -> Vec<String> {
        f.records
            .iter()
            .map(|(_, r)| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn records_before_the_position_are_skipped_and_a_cut_last_batch_waits() {
        let second = batch(3, 2, None);
        let bytes = [batch(0, 3, None), second.clone(), batch(5, 4, None)].concat();
        let cut = &bytes[..bytes.len() - 10];
        let f = parse_fetched(cut, 2, &[], false).unwrap();
        assert_eq!(values(&f), ["v2", "v3", "v4"]);
        assert_eq!(f.next_position, 5);
    }

    #[test]
    fn only_part_of_a_first_batch_is_an_error_not_a_loop() {
        let bytes = batch(0, 3, None);
        assert!(parse_fetched(&bytes[..30], 0, &[], false).is_err());
        assert_eq!(parse_fetched(&[], 7, &[], false).unwrap().next_position, 7);
    }

    #[test]
    fn a_corrupt_batch_is_an_error() {
        let mut bytes = batch(0, 3, None);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(parse_fetched(&bytes, 0, &[], false)
            .unwrap_err()
            .contains("CRC"));
    }

    #[test]
    fn read_committed_drops_aborted_transactions_and_every_marker() {
        // Producer 7 aborts offsets 0-1 (marker at 2); producer 8 commits 3-4 (marker at 5);
        // producer 7 then commits 6 (marker at 7).
        let bytes = [
            batch(0, 2, Some(7)),
            marker(2, 7, false),
            batch(3, 2, Some(8)),
            marker(5, 8, true),
            batch(6, 1, Some(7)),
            marker(7, 7, true),
        ]
        .concat();
        let committed = parse_fetched(&bytes, 0, &[(0, 7)], true).unwrap();
        assert_eq!(values(&committed), ["v3", "v4", "v6"]);
        assert_eq!(committed.next_position, 8);
        let uncommitted = parse_fetched(&bytes, 0, &[(0, 7)], false).unwrap();
        assert_eq!(values(&uncommitted), ["v0", "v1", "v3", "v4", "v6"]);
    }

    #[test]
    fn impossible_base_offsets_are_refused() {
        assert!(parse_fetched(&batch(i64::MAX - 1, 1, None), 0, &[], false).is_err());
        assert!(parse_fetched(&batch(-5, 1, None), -5, &[], false).is_err());
    }

    #[test]
    fn json_records_say_how_their_bytes_are_encoded() {
        let r = Record {
            offset_delta: 0,
            offset: 4,
            timestamp: 9,
            key: Some(vec![0xff, 0x00]),
            value: Some(b"hello".to_vec()),
            headers: vec![sluice_records::Header {
                key: "h".into(),
                value: None,
            }],
        };
        let json = record_json("t", 1, TimestampType::CreateTime, &r);
        assert_eq!(
            json,
            json!({
                "topic": "t", "partition": 1, "offset": 4, "timestamp": 9,
                "timestamp_type": "CreateTime",
                "key": "ff00", "key_encoding": "hex",
                "value": "hello", "value_encoding": "utf8",
                "headers": [{"key": "h", "value": null, "value_encoding": null}],
            })
        );
    }
}
