//! The classic protocol's "consumer" payloads — a member's subscription and its assignment, opaque
//! bytes to the broker — and the range assignor, which the group's leader runs.
//!
//! Other members' payloads come from other clients through the broker: they are read by a bounded
//! parser (every count checked against the bytes left) rather than decoded into structures sized by
//! the counts on the wire.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use crate::escape::Esc;

/// The assignor shipper runs and offers: `range`, which every Kafka client knows.
pub const RANGE: &str = "range";

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// A subscription (ConsumerProtocolSubscription v0): the topics, no user data.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        put_str(&mut b, t);
    }
    b.put_i32(-1); // user data: null
    b.freeze()
}

/// An assignment (ConsumerProtocolAssignment v0): partitions by topic, no user data.
pub fn encode_assignment(a: &Assignment) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(a.len() as i32);
    for (t, ps) in a {
        put_str(&mut b, t);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(*p);
        }
    }
    b.put_i32(-1);
    b.freeze()
}

/// Partitions by topic, for messages.
pub fn assignment_text(a: &Assignment) -> String {
    if a.is_empty() {
        return "nothing".into();
    }
    a.iter()
        .map(|(t, ps)| format!("{}[{}]", Esc::str(t), crate::escape::partitions(ps)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn put_str(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(s.len() as i16);
    b.put_slice(s);
}

/// A bounded reader of the classic protocol's big-endian fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("{n} bytes wanted, {} left", self.0.len()));
        }
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(a)
    }
    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// An array count, checked against the bytes left (each element takes at least `min` bytes).
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        if n.saturating_mul(min) > self.0.len() {
            return Err(format!("{n} elements in {} bytes", self.0.len()));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
}

/// The topics of a member's subscription (any version: later versions append fields).
pub fn decode_subscription(b: &[u8]) -> Result<Vec<String>, String> {
    let mut r = Reader(b);
    let _version = r.i16()?;
    let n = r.count(2)?;
    (0..n).map(|_| r.string()).collect()
}

/// The partitions of an assignment (any version); empty bytes are an empty assignment.
pub fn decode_assignment(b: &[u8]) -> Result<Assignment, String> {
    let mut out = Assignment::new();
    if b.is_empty() {
        return Ok(out);
    }
    let mut r = Reader(b);
    let _version = r.i16()?;
    for _ in 0..r.count(6)? {
        let topic = r.string()?;
        let n = r.count(4)?;
        let set = out.entry(topic).or_default();
        for _ in 0..n {
            set.insert(r.i32()?);
        }
    }
    Ok(out)
}

/// The range assignor: for each topic, its partitions in order are cut into contiguous ranges, one per
/// member subscribed to it (members in member-id order), the first `partitions % members` members
/// taking one more. The same rule as Kafka's RangeAssignor and librdkafka's, so a mixed group agrees.
pub fn range(
    members: &[(String, Vec<String>)],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|(m, _)| (m.clone(), Assignment::new()))
        .collect();
    for (topic, &count) in partitions {
        let mut subs: Vec<&String> = members
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        subs.sort();
        subs.dedup();
        if subs.is_empty() || count <= 0 {
            continue;
        }
        let n = subs.len() as i32;
        let (each, extra) = (count / n, count % n);
        for (i, m) in subs.into_iter().enumerate() {
            let i = i as i32;
            let start = i * each + i.min(extra);
            let len = each + i32::from(i < extra);
            if len == 0 {
                continue;
            }
            if let Some(a) = out.get_mut(m) {
                a.insert(topic.clone(), (start..start + len).collect());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
    use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn subs(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn range_cuts_each_topic_in_contiguous_ranges_the_first_members_taking_the_extra() {
        let parts = BTreeMap::from([("a".to_string(), 7), ("b".to_string(), 2)]);
        let got = range(
            &subs(&[("m2", &["a", "b"]), ("m1", &["a", "b"]), ("m3", &["a"])]),
            &parts,
        );
        let p = |m: &str, t: &str| -> Vec<i32> {
            got[m]
                .get(t)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default()
        };
        assert_eq!(p("m1", "a"), vec![0, 1, 2]);
        assert_eq!(p("m2", "a"), vec![3, 4]);
        assert_eq!(p("m3", "a"), vec![5, 6]);
        assert_eq!(p("m1", "b"), vec![0]);
        assert_eq!(p("m2", "b"), vec![1]);
        assert!(p("m3", "b").is_empty());
    }

    #[test]
    fn range_with_more_members_than_partitions_leaves_some_empty() {
        let parts = BTreeMap::from([("a".to_string(), 2)]);
        let got = range(
            &subs(&[("x", &["a"]), ("y", &["a"]), ("z", &["a"])]),
            &parts,
        );
        let total: usize = got
            .values()
            .map(|a| a.values().map(|s| s.len()).sum::<usize>())
            .sum();
        assert_eq!(total, 2);
        assert!(got["z"].is_empty());
    }

    #[test]
    fn our_payloads_decode_with_kafka_protocol_and_theirs_with_ours() {
        let topics = vec!["logs".to_string(), "app-1".to_string()];
        let mut bytes = encode_subscription(&topics);
        let version = i16::from_be_bytes([bytes[0], bytes[1]]);
        let _ = bytes.split_to(2);
        let sub = ConsumerProtocolSubscription::decode(&mut bytes, version).unwrap();
        assert_eq!(
            sub.topics.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            ["logs", "app-1"]
        );

        // A v3 subscription as a Java member writes it.
        let mut theirs = ConsumerProtocolSubscription::default();
        theirs.topics = vec![StrBytes::from_static_str("t")];
        theirs.generation_id = 4;
        let mut b = BytesMut::new();
        b.put_i16(3);
        theirs.encode(&mut b, 3).unwrap();
        assert_eq!(decode_subscription(&b).unwrap(), ["t"]);

        let a = Assignment::from([("t".to_string(), BTreeSet::from([0, 2]))]);
        let mut bytes = encode_assignment(&a);
        let _ = bytes.split_to(2);
        let dec = ConsumerProtocolAssignment::decode(&mut bytes, 0).unwrap();
        assert_eq!(dec.assigned_partitions[0].partitions, vec![0, 2]);
        assert_eq!(decode_assignment(&encode_assignment(&a)).unwrap(), a);
    }

    #[test]
    fn hostile_payloads_are_refused_without_allocating() {
        // A count of 2^31-1 topics in 10 bytes.
        let b = [0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 1, b'x', 0];
        assert!(decode_subscription(&b).is_err());
        assert!(decode_assignment(&b).is_err());
        assert!(decode_assignment(&[0]).is_err());
        assert!(decode_assignment(&[]).unwrap().is_empty());
    }
}
