//! `sluice produce`: the lines of stdin as records of a topic, one record per line.
//!
//! Lines accumulate until stdin has nothing more to give without waiting (or a request is
//! full); then they go out in one ProduceRequest holding one v2 batch per partition. A pipe
//! is therefore sent in large requests, and a person typing sees each line sent when they
//! end it. Every partition's answer is checked; the first error stops the command.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use serde_json::json;
use sluice_records::{BatchBuilder, NewRecord};

use crate::client::Client;
use crate::output::{print_json, OutputArgs, OutputFormat, Table};
use crate::requests::{check_with, partition_ids, s, topic_metadata, BrokerArgs};

/// The longest line read: it bounds memory, not what the broker accepts
/// (`message.max.bytes`, which refuses a batch with a Kafka error).
const LINE_MAX_BYTES: usize = 1 << 20;
/// Record bytes sent in one request at most (a longer line goes alone). Below Kafka's default
/// `message.max.bytes` (1 MiB), so a batch of many small records is never refused for size.
const REQUEST_RECORD_BYTES_MAX: usize = 512 << 10;
/// What reading stdin buffers.
const STDIN_BUFFER_BYTES: usize = 64 << 10;
/// How long the broker may take to acknowledge a request.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Bytes a record takes besides its key, value and headers (length, attributes, deltas,
/// lengths as varints): an estimate for [`REQUEST_RECORD_BYTES_MAX`], generous on purpose.
const RECORD_OVERHEAD_BYTES: usize = 24;

#[derive(clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The topic; the broker creates it if it auto-creates topics.
    topic: String,
    /// Write every record to this partition. Without it, a record with a key goes where
    /// Kafka's default partitioner puts it (murmur2 of the key modulo the partition count),
    /// and records without a key take the partitions in turn.
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
    /// Split each line at the first key separator: the key before, the value after.
    #[arg(long)]
    parse_key: bool,
    /// The key separator [default: ":"]; implies --parse-key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header on every record; repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Acknowledgements to wait for: -1 or all (every in-sync replica), 1 (the leader), 0
    /// (none: the broker does not answer, so errors and offsets go unreported).
    #[arg(long, default_value = "-1", allow_hyphen_values = true, value_parser = parse_acks)]
    acks: i16,
    #[command(flatten)]
    output: OutputArgs,
}

fn parse_acks(value: &str) -> Result<i16, String> {
    match value {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err("expected -1 (or all), 1 or 0".into()),
    }
}

/// Kafka's murmur2 (`Utils.murmur2` in the Java client), which its default partitioner hashes
/// keys with: 32-bit MurmurHash2 with seed 0x9747b28c, words read little-endian.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java hashes `int` lengths; keys are bounded by LINE_MAX_BYTES.
    let mut h = 0x9747_b28c ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let t = tail
            .iter()
            .enumerate()
            .fold(0u32, |t, (i, &b)| t | u32::from(b) << (8 * i));
        h = (h ^ t).wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// Where each record goes.
enum Partitioner {
    Fixed(i32),
    /// Keyed records by murmur2, the others in turn; over the topic's partition ids in order.
    Default {
        ids: Vec<i32>,
        next_unkeyed: usize,
    },
}

impl Partitioner {
    fn partition(&mut self, key: Option<&[u8]>) -> i32 {
        match self {
            Partitioner::Fixed(p) => *p,
            Partitioner::Default { ids, next_unkeyed } => {
                let index = match key {
                    Some(key) => (murmur2(key) & 0x7fff_ffff) as usize % ids.len(),
                    None => {
                        *next_unkeyed = (*next_unkeyed + 1) % ids.len();
                        *next_unkeyed
                    }
                };
                ids[index]
            }
        }
    }
}

/// What was acknowledged in one partition.
#[derive(Default)]
struct PartitionSummary {
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

/// A batch being filled, and the time its first line was read, which record timestamps are
/// deltas from.
struct PendingBatch {
    base_timestamp: i64,
    builder: BatchBuilder,
}

struct Producer {
    client: Client,
    topic: String,
    acks: i16,
    /// The batch being filled for each partition, and their records' estimated bytes.
    pending: BTreeMap<i32, PendingBatch>,
    pending_bytes: usize,
    summary: BTreeMap<i32, PartitionSummary>,
    lines_read: u64,
    /// Records acknowledged (or, with acks=0, sent).
    records_sent: u64,
}

/// How a line becomes a record.
struct LineFormat {
    /// Splits key from value, if lines carry keys.
    separator: Option<Vec<u8>>,
    /// Put on every record.
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl LineFormat {
    fn record(&self, line: &[u8], number: u64) -> Result<NewRecord, String> {
        let (key, value) = match &self.separator {
            None => (None, line),
            Some(sep) => {
                let at = find(line, sep).ok_or_else(|| {
                    format!(
                        "line {number} has no key separator {:?}",
                        String::from_utf8_lossy(sep)
                    )
                })?;
                (Some(line[..at].to_vec()), &line[at + sep.len()..])
            }
        };
        Ok(NewRecord {
            key,
            value: Some(value.to_vec()),
            headers: self.headers.clone(),
            timestamp_delta: 0,
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Producer {
    fn add(&mut self, partition: i32, record: NewRecord) -> Result<(), String> {
        let size = RECORD_OVERHEAD_BYTES
            + record.key.as_ref().map_or(0, Vec::len)
            + record.value.as_ref().map_or(0, Vec::len)
            + record
                .headers
                .iter()
                .map(|(k, v)| RECORD_OVERHEAD_BYTES + k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        if self.pending_bytes + size > REQUEST_RECORD_BYTES_MAX && !self.pending.is_empty() {
            self.send()?;
        }
        // Each record carries the time its line was read.
        let now = now_ms();
        let batch = self
            .pending
            .entry(partition)
            .or_insert_with(|| PendingBatch {
                base_timestamp: now,
                builder: BatchBuilder::new(now),
            });
        batch.builder.push(NewRecord {
            timestamp_delta: now.saturating_sub(batch.base_timestamp),
            ..record
        });
        self.pending_bytes += size;
        Ok(())
    }

    /// Sends every pending batch in one request and checks every partition's answer.
    fn send(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let counts: BTreeMap<i32, u64> = batches
            .iter()
            .map(|(p, b)| (*p, b.builder.len() as u64))
            .collect();
        let partition_data = batches
            .into_iter()
            .map(|(p, b)| {
                PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(Bytes::from(b.builder.build())))
            })
            .collect();
        let req = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s(&self.topic)))
                .with_partition_data(partition_data)]);
        if self.acks == 0 {
            self.client.send(ApiKey::Produce, &req)?;
            for (p, n) in counts {
                self.summary.entry(p).or_default().records += n;
                self.records_sent += n;
            }
            return Ok(());
        }
        let resp: ProduceResponse = self.client.call(ApiKey::Produce, &req)?;
        let answers: BTreeMap<i32, &produce_response::PartitionProduceResponse> = resp
            .responses
            .iter()
            .filter(|t| t.name.as_str() == self.topic)
            .flat_map(|t| &t.partition_responses)
            .map(|p| (p.index, p))
            .collect();
        for (p, n) in counts {
            let answer = answers
                .get(&p)
                .ok_or_else(|| format!("Produce: no answer for {}-{p}", self.topic))?;
            let message = answer.error_message.clone().or_else(|| {
                answer
                    .record_errors
                    .first()
                    .and_then(|e| e.batch_index_error_message.clone())
            });
            check_with(
                answer.error_code,
                &message,
                &format!("producing to {}-{p}", self.topic),
            )?;
            let summary = self.summary.entry(p).or_default();
            summary.records += n;
            summary.first_offset.get_or_insert(answer.base_offset);
            summary.last_offset = Some(answer.base_offset.saturating_add(n as i64 - 1));
            self.records_sent += n;
        }
        Ok(())
    }

    /// Reads stdin to its end, sending what has been read whenever stdin has nothing more
    /// to give at once.
    fn produce_lines<R: Read>(
        &mut self,
        input: &mut BufReader<R>,
        lines: &LineFormat,
        partitioner: &mut Partitioner,
    ) -> Result<(), String> {
        let mut line = Vec::new();
        while read_line(input, &mut line, self.lines_read + 1)? {
            self.lines_read += 1;
            let record = lines.record(&line, self.lines_read)?;
            let partition = partitioner.partition(record.key.as_deref());
            self.add(partition, record)?;
            if !input_ready(input) {
                self.send()?;
            }
        }
        self.send()
    }

    fn verb(&self) -> &'static str {
        if self.acks == 0 {
            "sent"
        } else {
            "acknowledged"
        }
    }

    fn print_summary(&self, format: OutputFormat) {
        let mut table = Table::new(&["PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET"]);
        for (p, s) in &self.summary {
            table.push(vec![
                (*p).into(),
                (s.records as i64).into(),
                s.first_offset.into(),
                s.last_offset.into(),
            ]);
        }
        match format {
            OutputFormat::Table => eprint!(
                "{} record(s) {} in topic {}\n{}",
                self.records_sent,
                self.verb(),
                self.topic,
                table.render()
            ),
            OutputFormat::Json => print_json(&json!({
                "topic": self.topic,
                "records": self.records_sent,
                "acks": self.acks,
                "partitions": table.to_json(),
            })),
        }
    }
}

/// Reads one line without its `\n` (or `\r\n`) into `line`; `false` at the end of input.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>, number: u64) -> Result<bool, String> {
    line.clear();
    input
        .take(LINE_MAX_BYTES as u64 + 1)
        .read_until(b'\n', line)
        .map_err(|e| format!("reading stdin: {e}"))?;
    if line.is_empty() {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() > LINE_MAX_BYTES {
        return Err(format!(
            "line {number} is longer than {LINE_MAX_BYTES} bytes"
        ));
    }
    Ok(true)
}

/// Whether stdin can be read without waiting: bytes in our buffer, or in the pipe or file.
fn input_ready<R: Read>(reader: &BufReader<R>) -> bool {
    if !reader.buffer().is_empty() {
        return true;
    }
    let mut fd = libc::pollfd {
        fd: std::io::stdin().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; poll only writes `revents`.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0
}

pub fn run(args: ProduceArgs) -> Result<(), String> {
    let separator = match (&args.key_separator, args.parse_key) {
        (Some(sep), _) if sep.is_empty() => return Err("--key-separator is empty".into()),
        (Some(sep), _) => Some(sep.clone().into_bytes()),
        (None, true) => Some(b":".to_vec()),
        (None, false) => None,
    };
    let headers = args
        .headers
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec())))
                .ok_or_else(|| format!("--header {pair}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut client = args.broker.connect()?;
    let topic = topic_metadata(&mut client, &args.topic, true)?;
    let ids = partition_ids(&topic)?;
    let mut partitioner = match args.partition {
        Some(p) if ids.contains(&p) => Partitioner::Fixed(p),
        Some(p) => {
            return Err(format!(
                "topic {} has no partition {p} (it has {})",
                args.topic,
                ids.len()
            ))
        }
        None => Partitioner::Default {
            next_unkeyed: ids.len() - 1,
            ids,
        },
    };
    let mut producer = Producer {
        client,
        topic: args.topic.clone(),
        acks: args.acks,
        pending: BTreeMap::new(),
        pending_bytes: 0,
        summary: BTreeMap::new(),
        lines_read: 0,
        records_sent: 0,
    };
    let lines = LineFormat { separator, headers };
    let mut input = BufReader::with_capacity(STDIN_BUFFER_BYTES, std::io::stdin().lock());
    match producer.produce_lines(&mut input, &lines, &mut partitioner) {
        Ok(()) => {
            producer.print_summary(args.output.output);
            Ok(())
        }
        Err(e) => Err(format!(
            "{e} ({} of {} record(s) {} before)",
            producer.records_sent,
            producer.lines_read,
            producer.verb()
        )),
    }
}

/// The position of the first `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_clients_known_values() {
        // From the Java client's own test of Utils.murmur2, as signed ints.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                *expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn keyless_records_take_the_partitions_in_turn_and_keys_stay_put() {
        let mut p = Partitioner::Default {
            ids: vec![0, 1, 2],
            next_unkeyed: 2,
        };
        let turns: Vec<i32> = (0..4).map(|_| p.partition(None)).collect();
        assert_eq!(turns, [0, 1, 2, 0]);
        let first = p.partition(Some(b"k"));
        assert!((0..4).all(|_| p.partition(Some(b"k")) == first));
    }

    #[test]
    fn lines_lose_their_line_ending_and_overlong_lines_are_refused() {
        let mut input = &b"a\r\nb\n\nlast"[..];
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while read_line(&mut input, &mut line, 0).unwrap() {
            lines.push(String::from_utf8(line.clone()).unwrap());
        }
        assert_eq!(lines, ["a", "b", "", "last"]);
        let long = vec![b'x'; LINE_MAX_BYTES + 1];
        assert!(read_line(&mut &long[..], &mut line, 1).is_err());
        let fits = [vec![b'x'; LINE_MAX_BYTES], b"\n".to_vec()].concat();
        assert!(read_line(&mut &fits[..], &mut line, 1).unwrap());
    }
}
