//! Counting the records of stored batches as their bytes stream past, in pieces of any size:
//! the broker sends fetch data from segment files in chunks and counts what it sends without
//! a second read of the headers.

use crate::batch::{BATCH_HEADER_SIZE, LOG_OVERHEAD};

/// Bit 5 of the attributes: a control batch (transaction marker), not client records.
const CONTROL_FLAG: u8 = 0x20;

/// Counts the records of the non-control batches in a byte stream that starts at a batch
/// boundary. Batches with a damaged length end the count (nothing after them is counted).
#[derive(Debug, Default, Clone)]
pub struct RecordCounter {
    /// Bytes still to skip before the next batch header.
    skip: u64,
    /// The part of the next header seen so far.
    header: Vec<u8>,
    stopped: bool,
}

impl RecordCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; returns the records of the batches whose headers
    /// were completed by them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut records = 0u64;
        while !bytes.is_empty() && !self.stopped {
            if self.skip > 0 {
                let n = (self.skip.min(bytes.len() as u64)) as usize;
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let want = BATCH_HEADER_SIZE - self.header.len();
            let n = want.min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < BATCH_HEADER_SIZE {
                break;
            }
            let h = &self.header;
            let length = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            let attributes_low = h[22];
            let count = i32::from_be_bytes([h[57], h[58], h[59], h[60]]);
            let total = LOG_OVERHEAD as i64 + i64::from(length);
            if total < BATCH_HEADER_SIZE as i64 {
                self.stopped = true;
                break;
            }
            if attributes_low & CONTROL_FLAG == 0 {
                records += count.max(0) as u64;
            }
            self.skip = (total - BATCH_HEADER_SIZE as i64) as u64;
            self.header.clear();
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{marker_batch, BatchBuilder, BatchHeader, BatchIter, NewRecord};
    use proptest::prelude::*;

    fn stream(sizes: &[usize]) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let mut total = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let mut b = BatchBuilder::new(1_000);
            for r in 0..n {
                b.push(NewRecord {
                    key: None,
                    value: Some(vec![r as u8; r % 40]),
                    headers: Vec::new(),
                    timestamp_delta: 0,
                });
            }
            out.extend(b.build());
            total += n as u64;
            if i % 3 == 2 {
                out.extend(marker_batch(7, 0, true, 0, 1_000));
            }
        }
        (out, total)
    }

    proptest! {
        /// However the stream is cut into pieces, the count equals the records of its
        /// non-control batches as their parsed headers say.
        #[test]
        fn any_split_counts_every_client_record(
            sizes in proptest::collection::vec(1usize..20, 1..12),
            cuts in proptest::collection::vec(0usize..4000, 0..10),
        ) {
            let (bytes, total) = stream(&sizes);
            let parsed: u64 = BatchIter::new(&bytes)
                .map(|b| BatchHeader::parse(b.unwrap()).unwrap())
                .filter(|h| !h.is_control())
                .map(|h| h.records_count as u64)
                .sum();
            prop_assert_eq!(parsed, total);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut counter = RecordCounter::new();
            let mut counted = 0;
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                counted += counter.feed(&bytes[at..c]);
                at = c;
            }
            prop_assert_eq!(counted, total);
        }
    }
}
