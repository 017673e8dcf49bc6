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

/// The topics of a consumer subscription, or `None` if the bytes are not one.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut r = metadata;
    take_i16(&mut r)?;
    let count = take_i32(&mut r)?;
    if count < 0 || count as usize > r.len() / 2 {
        return None;
    }
    (0..count).map(|_| take_str(&mut r)).collect()
}

/// The `(topic, partitions)` of a consumer assignment, or `None` if the bytes are not one.
/// Empty bytes (a member that has not been assigned anything yet) are an empty assignment.
pub fn assigned_partitions(assignment: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    if assignment.is_empty() {
        return Some(Vec::new());
    }
    let mut r = assignment;
    take_i16(&mut r)?;
    let count = take_i32(&mut r)?;
    if count < 0 || count as usize > r.len() / 6 {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let topic = take_str(&mut r)?;
        let n = take_i32(&mut r)?;
        if n < 0 || n as usize > r.len() / 4 {
            return None;
        }
        let partitions = (0..n).map(|_| take_i32(&mut r)).collect::<Option<_>>()?;
        out.push((topic, partitions));
    }
    Some(out)
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Some(head)
}

fn take_i16(r: &mut &[u8]) -> Option<i16> {
    Some(i16::from_be_bytes(take(r, 2)?.try_into().ok()?))
}

fn take_i32(r: &mut &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(take(r, 4)?.try_into().ok()?))
}

fn take_str(r: &mut &[u8]) -> Option<String> {
    let len = take_i16(r)?;
    if len < 0 {
        return None;
    }
    String::from_utf8(take(r, len as usize)?.to_vec()).ok()
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
