//! The aborted-transaction index: for each segment, the transactions whose abort marker it
//! holds, so that a read_committed fetch can tell the client which producer's records to drop
//! in the range it returns. Kafka's `.txnindex` layout, 34 bytes per entry, big-endian:
//!
//! ```text
//! i16 version = 0 | i64 producer id | i64 first offset | i64 last offset (the marker)
//! | i64 last stable offset (the partition's LSO just after the abort)
//! ```
//!
//! The file is derived from the log: recovery drops entries at or past the offset it replays
//! producer state from and rebuilds them from the markers it meets.

/// Bytes of one entry.
pub(crate) const ENTRY_BYTES: usize = 34;

/// One aborted transaction of one producer on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The offset of the transaction's first batch on this partition.
    pub first_offset: i64,
    /// The offset of its abort marker.
    pub last_offset: i64,
    /// The partition's last stable offset once the abort was written: no transaction aborted
    /// later started below it.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    pub(crate) fn to_bytes(self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses an index file; stops at a torn or unknown entry.
pub(crate) fn parse(bytes: &[u8]) -> Vec<AbortedTxn> {
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
    for chunk in bytes.chunks_exact(ENTRY_BYTES) {
        if chunk[..2] != [0, 0] {
            break;
        }
        let entry = AbortedTxn {
            producer_id: i64_at(chunk, 2),
            first_offset: i64_at(chunk, 10),
            last_offset: i64_at(chunk, 18),
            last_stable_offset: i64_at(chunk, 26),
        };
        if entry.first_offset > entry.last_offset {
            break;
        }
        out.push(entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_dropped() {
        let a = AbortedTxn {
            producer_id: 9,
            first_offset: 10,
            last_offset: 20,
            last_stable_offset: 21,
        };
        let b = AbortedTxn {
            producer_id: 3,
            first_offset: 15,
            last_offset: 30,
            last_stable_offset: 31,
        };
        let mut bytes: Vec<u8> = [a, b].iter().flat_map(|e| e.to_bytes()).collect();
        assert_eq!(parse(&bytes), vec![a, b]);
        bytes.truncate(ENTRY_BYTES + 7);
        assert_eq!(parse(&bytes), vec![a]);
    }
}
