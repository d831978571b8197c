//! Where a read starts in each partition (`-o`), resolved against the partition's real bounds.

/// Where to start reading each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The log start.
    Beginning,
    /// The end: only new records.
    End,
    /// This absolute offset (clamped to what exists).
    Absolute(i64),
    /// This many records before the end of each partition.
    FromEnd(i64),
    /// The first record at or after this timestamp (ms).
    Timestamp(i64),
}

impl StartOffset {
    /// Parses `beginning`, `end`, `N`, `-N`, `s@TIMESTAMP_MS`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "beginning" | "earliest" => Some(StartOffset::Beginning),
            "end" | "latest" => Some(StartOffset::End),
            _ => {
                if let Some(ts) = s.strip_prefix("s@") {
                    // Kafka reserves negative timestamps (-1 latest, -2 earliest, -3 max).
                    return ts
                        .parse()
                        .ok()
                        .filter(|t: &i64| *t >= 0)
                        .map(StartOffset::Timestamp);
                }
                let n: i64 = s.parse().ok()?;
                // `-0` is "none before the end" (the end), not offset 0.
                Some(if s.starts_with('-') {
                    StartOffset::FromEnd(n.checked_neg()?)
                } else {
                    StartOffset::Absolute(n)
                })
            }
        }
    }

    /// The offset to start at, given the partition's earliest and latest offsets and (for a
    /// timestamp) the offset ListOffsets found. A broker whose earliest is past its latest is taken at
    /// its latest.
    pub fn resolve(self, earliest: i64, latest: i64, by_time: Option<i64>) -> i64 {
        let hi = latest.max(0);
        let lo = earliest.clamp(0, hi);
        match self {
            StartOffset::Beginning => lo,
            StartOffset::End => hi,
            StartOffset::Absolute(n) => n.clamp(lo, hi),
            StartOffset::FromEnd(n) => hi.saturating_sub(n).max(lo),
            StartOffset::Timestamp(_) => {
                by_time.filter(|&o| o >= 0).map_or(hi, |o| o.clamp(lo, hi))
            }
        }
    }
}
