//! The parts of the consumer protocol (protocol type "consumer") the broker reads: the topics a
//! member subscribes to and the partitions it was assigned. The coordinator never needs more;
//! the assignment itself is computed by the group leader, a client.
//!
//! ```text
//! subscription  i16 version | i32 count, then per topic: i16 length, UTF-8 name | …
//! assignment    i16 version | i32 count, then per topic: i16 length, UTF-8 name
//!                                         | i32 count, then per partition: i32 partition | …
//! ```
//! Only the leading fields are read; what follows them (user data, owned partitions, rack,
//! generation) depends on the version and is ignored.

use sluice_records::kv::Reader;

/// The topics of a consumer subscription, or `None` if the bytes are not one.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader::new(metadata);
    r.i16().ok()?;
    // A topic takes at least its i16 length.
    let count = r.count(2).ok()??;
    (0..count).map(|_| r.str().ok()).collect()
}

/// The `(topic, partitions)` of a consumer assignment, or `None` if the bytes are not one.
/// Empty bytes (a member that has not been assigned anything yet) are an empty assignment.
pub fn assigned_partitions(assignment: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    if assignment.is_empty() {
        return Some(Vec::new());
    }
    let mut r = Reader::new(assignment);
    r.i16().ok()?;
    // A topic takes at least its i16 length and its i32 partition count.
    let count = r.count(6).ok()??;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let topic = r.str().ok()?;
        let n = r.count(4).ok()??;
        let partitions = (0..n).map(|_| r.i32().ok()).collect::<Option<_>>()?;
        out.push((topic, partitions));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_topics_and_assignments_and_refuses_garbage() {
        let mut sub = vec![0, 1, 0, 0, 0, 2];
        for t in ["a", "bc"] {
            sub.extend_from_slice(&(t.len() as i16).to_be_bytes());
            sub.extend_from_slice(t.as_bytes());
        }
        sub.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // null user data
        assert_eq!(subscribed_topics(&sub), Some(vec!["a".into(), "bc".into()]));

        let mut asg = vec![0, 0, 0, 0, 0, 1, 0, 1, b'a', 0, 0, 0, 2];
        asg.extend_from_slice(&3i32.to_be_bytes());
        asg.extend_from_slice(&5i32.to_be_bytes());
        assert_eq!(
            assigned_partitions(&asg),
            Some(vec![("a".into(), vec![3, 5])])
        );
        assert_eq!(subscribed_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(assigned_partitions(&[0, 1, 0, 0, 0, 1, 0, 9]), None);
    }
}
