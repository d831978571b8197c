//! Choosing a partition: Java's murmur2 for keys (so keys land where Java producers put them), and a
//! sticky random choice for keyless records, held for a whole batch so batches stay large.

/// How records are spread over partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioner {
    /// Keyed records by murmur2 of the key; keyless ones sticky (default).
    #[default]
    Default,
    /// One random partition per batch, for every record (keys ignored).
    Sticky,
    /// A random partition per record, as the seed did (small batches).
    Random,
    /// murmur2 of the key for every record; keyless records use sticky.
    Murmur2,
}

impl Partitioner {
    /// Parses `random`, `sticky`, `murmur2` or `default`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "default" => Partitioner::Default,
            "sticky" => Partitioner::Sticky,
            "random" => Partitioner::Random,
            "murmur2" => Partitioner::Murmur2,
            _ => return None,
        })
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Java's default partitioner picks for `key` among `n` partitions.
pub fn partition_for_key(key: &[u8], n: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % n.max(1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
