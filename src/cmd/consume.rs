//! `shipper consume TOPIC...`: print topics' records, like `kcat -C` or kafka-console-consumer; with
//! `-G GROUP`, as a member of a consumer group, like `kcat -G`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{TroubleNews, TroubleWatch};
use crate::cli::{CommitMode, Common, ConsumeArgs, Isolation};
use crate::cluster::Cluster;
use crate::consumer::{Consumer, FetchConfig, Fetched, StartOffset};
use crate::error::{Code, Error};
use crate::escape::Esc;
use crate::group::{offsets, Assignment, Event, GroupConfig, Member, Offsets};
use crate::output::behind::Behind;
use crate::output::Format;
use crate::settings::{usage, KafkaSettings};

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &ConsumeArgs) -> anyhow::Result<i32> {
    let format = match (&args.format, args.json) {
        (Some(f), _) => match Format::parse(f) {
            Ok(f) => f,
            Err(e) => return usage(e),
        },
        (None, true) => Format::Json,
        (None, false) => Format::Value,
    };
    let (start, stop_at) = offsets_asked(args)?;
    for t in &args.topics {
        crate::settings::check_topic_arg(t)?;
    }
    let settings = KafkaSettings::from_flags(common, Some(Duration::from_secs(30)))?;
    let isolation = match args.isolation_level {
        Some(i) => i,
        None => match settings.security.isolation_level.as_deref() {
            None | Some("read_committed") => Isolation::ReadCommitted,
            Some("read_uncommitted") => Isolation::ReadUncommitted,
            Some(v) => {
                return usage(format!(
                    "isolation.level '{}': use read_committed or read_uncommitted",
                    Esc::str(v)
                ))
            }
        },
    };
    let cluster = settings.cluster()?;
    let cfg = FetchConfig {
        read_committed: isolation == Isolation::ReadCommitted,
        // Following, one partition that cannot be read does not end the others' read; to an end
        // (-e, -o e@), it does.
        read_on: !args.exit_at_end && stop_at.is_none(),
        group: args.group.is_some(),
        ..FetchConfig::default()
    };
    let mut r = Reader {
        max_decompressed: cfg.max_decompressed_bytes,
        consumer: Consumer::new(cluster.clone(), cfg),
        cluster: cluster.clone(),
        out: Behind::stdout()?,
        held: VecDeque::new(),
        text: Text(Vec::with_capacity(TEXT_CHUNK)),
        format,
        start,
        stop_at,
        count: 0,
        // `-c 0` is no limit, as in kcat.
        max: args.max_messages.filter(|&n| n > 0).unwrap_or(u64::MAX),
        positions: Offsets::new(),
        given_back: Offsets::new(),
        given_back_ids: HashMap::new(),
        periodic_sent: Offsets::new(),
        member: None,
        commit: (!args.no_commit).then_some(args.commit),
        committing: None,
        commit_trouble: TroubleWatch::new(Duration::ZERO, Some(COMMIT_TROUBLE_EVERY)),
        assigned: false,
        waiting: (None, false),
    };
    match &args.group {
        Some(g) => {
            let mut gc = GroupConfig::new(g, &args.topics);
            gc.protocol = args.group_protocol;
            gc.session_timeout = Duration::from_millis(args.session_timeout_ms);
            gc.heartbeat_interval = gc.session_timeout / 3;
            // A topic that does not exist is an error here, as without a group (not a silent wait).
            for t in &args.topics {
                cluster.topic(t, false).await?;
            }
            r.member = Some(Member::join(cluster.clone(), gc).await?);
        }
        None => {
            for t in &args.topics {
                let deadline = cluster.options().deadline();
                let meta = cluster
                    .topic_for(t, false, deadline, &args.partitions)
                    .await?;
                r.consumer.assign(meta, &args.partitions, start).await?;
            }
            r.assigned = true;
        }
    }
    let result = r.read(args).await;
    r.finish(result, &args.topics).await
}

/// Where reading starts (`-o`, `--from-beginning`) and the timestamp it stops at (`-o e@TS`), if
/// any: at most one of each.
fn offsets_asked(args: &ConsumeArgs) -> anyhow::Result<(StartOffset, Option<i64>)> {
    let mut start = args.from_beginning.then_some(StartOffset::Beginning);
    let mut stop_at = None;
    for o in &args.offset {
        if let Some(ts) = o.strip_prefix("e@") {
            match ts.parse::<i64>() {
                Ok(ts) if ts >= 0 && stop_at.is_none() => stop_at = Some(ts),
                Ok(ts) if ts >= 0 => return usage("-o e@TIMESTAMP_MS given twice"),
                _ => {
                    return usage(format!(
                        "invalid --offset '{}': e@ takes a time in ms since the epoch",
                        Esc::str(o)
                    ))
                }
            }
            continue;
        }
        if start.is_some() {
            return usage(format!(
                "--offset '{}': a start was given already (a second -o is e@TIMESTAMP_MS, where to stop)",
                Esc::str(o)
            ));
        }
        match StartOffset::parse(o) {
            Some(s) => start = Some(s),
            None => {
                return usage(format!(
                    "invalid --offset '{}' (use beginning, end, N, -N or s@TIMESTAMP_MS, a time in ms since the epoch, not negative; and e@TIMESTAMP_MS to stop)",
                    Esc::str(o)
                ))
            }
        }
    }
    if stop_at.is_some() && args.group.is_some() {
        return usage("-o e@TIMESTAMP_MS reads partitions directly, not with -G");
    }
    // A stop with no start reads up to it from the beginning, as kcat does: from the end (the
    // start without -o) it waited for a record not written yet, printing nothing.
    let start = start.unwrap_or(match stop_at {
        Some(_) => StartOffset::Beginning,
        None => StartOffset::End,
    });
    Ok((start, stop_at))
}

/// The reading loop's state.
struct Reader {
    consumer: Consumer,
    cluster: Arc<Cluster>,
    /// Standard output, written by a thread of its own: a reader that stops reading (a pager, a
    /// pipe into a busy program) holds up the fetching, never the event loop, so the group's
    /// heartbeats go on (written from the loop, a stdout blocked for longer than the session got the
    /// member fenced and its partitions handed to another).
    /// Each chunk of text is tagged with the partition and the position its records reach.
    out: Behind<Reached>,
    /// Answers of partitions, or the rest of one, not formatted yet: standard output filled up
    /// (each from its `fetch_offset`).
    held: VecDeque<Fetched>,
    /// Records formatted and not handed to `out` yet.
    text: Text,
    format: Format,
    start: StartOffset,
    /// `-o e@TS`: each partition ends at its first record of this time or later (not printed).
    stop_at: Option<i64>,
    max_decompressed: usize,
    count: u64,
    max: u64,
    /// The next offset to read of every partition read from, as far as records were written out
    /// (taken by standard output, not only queued for it: the positions committed).
    positions: Offsets,
    /// Where partitions given back to the group stood: if one comes back before anyone else read
    /// further, reading goes on from here (never printing a record twice, even when a commit failed).
    given_back: Offsets,
    /// The id each topic had when its partitions were given back: a position in a topic deleted
    /// and created again since means nothing in the new one (t29 F1: the new topic's partition 0
    /// started at the old one's 81, and its first 81 records were never printed).
    given_back_ids: HashMap<String, [u8; 16]>,
    /// The positions the last periodic commit sent (forgotten when one fails: sent again).
    periodic_sent: Offsets,
    member: Option<Member>,
    /// Commit mode; `None` with --no-commit.
    commit: Option<CommitMode>,
    /// The periodic commit under way, in a task of its own: reading goes on while the coordinator
    /// is slow or away (awaited inline, it stopped the reading for up to 10 s of every 15).
    committing: Option<(tokio::task::JoinHandle<crate::error::Result<()>>, Instant)>,
    /// Periodic commits that fail (not merely stale): said when the first fails, again while they
    /// do, and once when one lands again (t36 F4: a coordinator paused for 40 s left only a "still
    /// trying" line, and nothing said that commits failed, nor that they worked again).
    commit_trouble: TroubleWatch,
    /// Whether partitions were assigned yet (at once without a group).
    assigned: bool,
    /// Since when a group member has waited for partitions, and whether that was said.
    waiting: (Option<Instant>, bool),
}

/// A group member that has waited this long for its first partitions says why it may wait more.
const WAIT_SAID_AFTER: Duration = Duration::from_secs(3);

impl Reader {
    /// Reads until a limit, a signal or an error. A poll is never interrupted but to stop, or when
    /// standard output's reader is gone (it may hold records already taken from the partitions,
    /// printed nowhere then): group events and commits are handled between polls, which end within
    /// the fetch wait (500 ms) or at once without partitions.
    async fn read(&mut self, args: &ConsumeArgs) -> anyhow::Result<()> {
        let idle_limit = args.timeout_ms.map(Duration::from_millis);
        // From the first answer on: the time to find the partitions and their offsets (or to join a
        // group) is not time without a record (helper-66: `--timeout-ms 1` printed nothing of a
        // topic of 200,000 records, exit 0).
        let mut last_record: Option<Instant> = None;
        let interval = Duration::from_millis(args.commit_interval_ms);
        let mut last_commit = Instant::now();
        let mut stop = std::pin::pin!(crate::tasks::stop_signal());
        loop {
            let all_stopped =
                self.stop_at.is_some() && self.assigned && !self.consumer.has_partitions();
            if self.count >= self.max
                || all_stopped
                || (args.exit_at_end
                    && self.assigned
                    && self.held.is_empty()
                    && self.consumer.at_end_of_start())
            {
                return Ok(());
            }
            while let Some(ev) = self.member.as_mut().and_then(Member::try_event) {
                self.on_event(ev).await?;
            }
            self.say_if_waiting();
            if self
                .committing
                .as_ref()
                .is_some_and(|(h, _)| h.is_finished())
            {
                self.settle_commit().await;
            }
            self.note_written();
            if self.commit == Some(CommitMode::Async)
                && last_commit.elapsed() >= interval
                && self.committing.is_none()
            {
                // Only what moved since the last periodic commit: one of a position unchanged
                // since its topic was deleted, sent after the topic is created again, would stand
                // for the new topic by name (t29 F1: its first records skipped).
                let moved: Offsets = self
                    .positions
                    .iter()
                    .filter(|(k, v)| self.periodic_sent.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                if let Some(m) = self.member.as_ref().filter(|_| !moved.is_empty()) {
                    self.committing = m.commit_later(moved).map(|h| (h, Instant::now()));
                    self.periodic_sent = self.positions.clone();
                }
                last_commit = Instant::now();
            }
            if self.out.is_full() {
                // Standard output is behind: no fetching until it takes some, while group events
                // and commits go on (looked at again within the heartbeat's reach).
                tokio::select! {
                    _ = self.out.room() => {}
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                last_record = Some(Instant::now());
                continue;
            }
            if !self.held.is_empty() {
                // What was fetched goes out before anything more is asked for; once standard
                // output has taken most of what waits (resumed at every chunk it took, the batch
                // the answer stopped in would be decompressed again for each chunk).
                if self.out.above(RESUME_BELOW) {
                    tokio::select! {
                        _ = self.out.below(RESUME_BELOW) => {}
                        _ = &mut stop => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    continue;
                }
                self.write_held()?;
                last_record = Some(Instant::now());
                continue;
            }
            let idle_deadline = idle_limit.zip(last_record).map(|(d, t)| t + d);
            let fetched = tokio::select! {
                r = self.consumer.poll() => r?,
                _ = &mut stop => return Ok(()),
                // Standard output's reader left while nothing came to print (`| head -2` of a
                // quiet topic): an end, as a failed write would be.
                _ = self.out.failed() => {
                    self.out.check()?;
                    return Ok(());
                }
                _ = until(idle_deadline) => {
                    crate::log::info(format_args!(
                        "no record for {} ms (--timeout-ms): stopping",
                        idle_limit.map_or(0, |d| d.as_millis())
                    ));
                    return Ok(());
                }
            };
            if self.assigned {
                last_record.get_or_insert_with(Instant::now);
            }
            // Positions in a topic since deleted and created again are not committed, nor resumed
            // from: they would stand for the new topic (t29 F1).
            for t in self.consumer.take_recreated() {
                self.positions.retain(|(name, _), _| name != &t);
                self.given_back.retain(|(name, _), _| name != &t);
                let consumer = &self.consumer;
                self.held.retain(|f| consumer.topic_name(f.topic) != t);
            }
            let any = fetched.iter().any(|f| !f.records.is_empty());
            self.write(fetched)?;
            if any {
                last_record = Some(Instant::now());
                if self.commit == Some(CommitMode::Sync) {
                    self.drain(false).await?;
                    self.commit_all(true).await;
                }
            }
        }
    }

    /// Formats the records and hands them to standard output's thread in chunks, each tagged with
    /// the partition and the position its records reach: the position counts (is committed) once
    /// the thread wrote all of the chunk. A record still queued when stdout fails (`| head` gone)
    /// is not written, and a position past it would be committed and skip it for the group.
    ///
    /// Standard output full, the rest of the answer is held as it came (compressed: a few MiB at
    /// most) and formatted from where it stopped once there is room: formatted at once, all of it
    /// waited in memory (a 4 MiB answer of compressed logs is hundreds of MiB of text).
    fn write(&mut self, fetched: Vec<Fetched>) -> anyhow::Result<()> {
        self.held.extend(fetched);
        self.write_held()
    }

    /// Formats the held answers until standard output is full or none is left.
    fn write_held(&mut self) -> anyhow::Result<()> {
        let mut scratch = Vec::new();
        while let Some(mut f) = self.held.pop_front() {
            if self.out.is_full() {
                self.held.push_front(f);
                break;
            }
            if let Some(from) = self.write_one(&f, &mut scratch)? {
                f.fetch_offset = from;
                self.held.push_front(f);
                break;
            }
        }
        self.note_written();
        Ok(())
    }

    /// Formats one partition's answer; `Some(offset)` when standard output filled up before its end:
    /// the rest is formatted from that offset later.
    fn write_one(&mut self, f: &Fetched, scratch: &mut Vec<u8>) -> anyhow::Result<Option<i64>> {
        {
            let topic = self.consumer.topic_name(f.topic).to_string();
            if !self.consumer.is_assigned(&topic, f.partition) {
                // Stopped at its end time by an earlier answer, or given back since it was held.
                return Ok(None);
            }
            let stop_at = self.stop_at.unwrap_or(i64::MAX);
            let mut stopped = false;
            // Stopped where standard output filled up: formatted on from there later.
            let mut paused = false;
            let mut write_err = None;
            let mut last = None;
            let mut in_chunk = 0;
            let (count, max, format, text, out) = (
                &mut self.count,
                self.max,
                &self.format,
                &mut self.text,
                &self.out,
            );
            // Stopping breaks the walk: the batches after are not decompressed (passed over, the
            // rest of an answer of 200 batches was decompressed at every stop: 50x the CPU).
            let res = f.for_each_record_while(scratch, self.max_decompressed, |r| {
                if *count >= max || write_err.is_some() || stopped || paused {
                    return ControlFlow::Break(());
                }
                if r.timestamp >= stop_at {
                    stopped = true;
                    return ControlFlow::Break(());
                }
                // Handed over in chunks, so that a large fetch is not all formatted first.
                *count += 1;
                in_chunk += 1;
                let written = format.write(text, &topic, f.partition, r).and_then(|()| {
                    if text.0.len() >= TEXT_CHUNK {
                        let tp = (topic.clone(), f.partition);
                        out.give(&mut text.0, (tp, r.offset.saturating_add(1), in_chunk))?;
                        in_chunk = 0;
                        paused = out.is_full();
                    }
                    Ok(())
                });
                match written {
                    Ok(()) => last = Some(r.offset.saturating_add(1)),
                    Err(e) => write_err = Some(e),
                }
                ControlFlow::Continue(())
            });
            if let Err(source) = res {
                // The records before the damage are printed (and count), as kcat prints them.
                if let Some(p) = last.filter(|_| in_chunk > 0 && write_err.is_none()) {
                    self.out.give(
                        &mut self.text.0,
                        ((topic.clone(), f.partition), p, in_chunk),
                    )?;
                }
                return Err(crate::error::Error::Records {
                    topic: topic.clone(),
                    partition: f.partition,
                    error: source,
                }
                .into());
            }
            if let Some(e) = write_err {
                return Err(e.into());
            }
            // All of it written: the position is past the batches (control records, compacted gaps).
            let pos = if self.count < self.max && !stopped && !paused {
                f.next_offset().ok()
            } else {
                last
            };
            // The rest of the partition's text (perhaps none: the position still moves, once what
            // was queued before it is written).
            if let Some(p) = pos.or(last).or((in_chunk > 0).then_some(-1)) {
                self.out.give(
                    &mut self.text.0,
                    ((topic.clone(), f.partition), p, in_chunk),
                )?;
            }
            if stopped {
                // At its end time: no more fetching of it.
                crate::log::debug(format_args!(
                    "'{}' partition {}: reached -o e@{stop_at}",
                    Esc::str(&topic),
                    f.partition
                ));
                self.consumer.unassign(&topic, &[f.partition]);
            }
            Ok(last.filter(|_| paused))
        }
    }

    /// Moves the positions reached by what standard output took so far into `positions`, for the
    /// partitions still read (a chunk of one given back may finish after the give-back).
    fn note_written(&mut self) {
        for ((t, p), pos, _) in self.out.take_written() {
            // Past where the partition is read next: a position from before its log was read
            // again from an earlier place (its topic created again), which means nothing now.
            let current = self
                .consumer
                .next_offset_of(&t, p)
                .is_some_and(|next| pos <= next);
            if pos >= 0 && current {
                self.positions.insert((t, p), pos);
            }
        }
    }

    /// Waits until standard output took everything printed (a write that failed is returned),
    /// or a signal: then `positions` is as far as it got. Partitions the group takes back meanwhile
    /// are given back at once (their output not started is dropped; a member waiting here for a
    /// blocked stdout would otherwise hold up the group's rebalance until the coordinator dropped
    /// it, and every record it queued would be printed twice). Partitions assigned meanwhile are
    /// taken when reading goes on; when `stopping`, nothing more is read, so the member leaves.
    async fn drain(&mut self, stopping: bool) -> anyhow::Result<()> {
        enum Step {
            Done,
            Stop,
            Event(Option<crate::error::Result<Event>>),
        }
        let mut stop = std::pin::pin!(crate::tasks::stop_signal());
        let mut listening = true;
        loop {
            let member = self.member.as_mut().filter(|_| listening);
            let event = async {
                match member {
                    Some(m) => m.event().await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                _ = self.out.drained() => Step::Done,
                _ = &mut stop => Step::Stop,
                ev = event => Step::Event(ev),
            };
            match step {
                Step::Done => break,
                Step::Stop => break,
                Step::Event(ev @ Some(Ok(Event::Assigned(_)))) if !stopping => {
                    self.on_event(ev).await?
                }
                Step::Event(Some(Ok(Event::Assigned(_)))) => {
                    // Stopping, and the group moved partitions: nothing more is read, so every
                    // partition goes back to it now, what waits for stdout included (committed up
                    // to what stdout took), rather than held until stdout takes the rest.
                    self.let_go(None).await;
                    self.commit_all(true).await;
                    if let Some(m) = self.member.take() {
                        m.leave().await;
                    }
                    listening = false;
                }
                Step::Event(ev @ Some(Ok(Event::Revoke { .. }))) => self.on_event(ev).await?,
                // The membership ended: nothing more to give back.
                Step::Event(_) => listening = false,
            }
        }
        self.note_written();
        Ok(self.out.check()?)
    }

    /// Partitions given back: their text not yet started is dropped (the next reader prints it),
    /// and the chunk being written is waited for, a second at most (a stdout blocked longer may
    /// print those records twice, theirs and the next reader's: one chunk at most).
    async fn let_go(&mut self, parts: Option<&Assignment>) {
        let mine = |(t, p): &(String, i32)| {
            parts.is_none_or(|parts| parts.get(t).is_some_and(|ps| ps.contains(p)))
        };
        let dropped = self.out.drop_queued(|(tp, _, _)| mine(tp));
        // Held answers of theirs too (never formatted: not counted).
        let consumer = &self.consumer;
        self.held
            .retain(|f| !mine(&(consumer.topic_name(f.topic).to_string(), f.partition)));
        // Not printed after all: `-c` and the count at the end are of records printed.
        let records: u64 = dropped.iter().map(|(_, _, n)| n).sum();
        self.count -= records.min(self.count);
        if records > 0 {
            crate::log::debug(format_args!(
                "{records} records of partitions given back dropped unprinted"
            ));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.out.started_written()).await;
        self.note_written();
    }

    /// A membership event: partitions to start reading, or to give back.
    async fn on_event(&mut self, ev: Option<crate::error::Result<Event>>) -> anyhow::Result<()> {
        match ev {
            None => anyhow::bail!("the group membership ended unexpectedly"),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(Event::Assigned(a))) => self.take(&a).await,
            Some(Ok(Event::Revoke { parts, lost, done })) => {
                self.let_go(Some(&parts)).await;
                self.out.check()?;
                if let Some(m) = &self.member {
                    crate::log::info(format_args!(
                        "group '{}': giving back {}{}",
                        Esc::str(m.group()),
                        crate::group::assignment_text(&parts),
                        if lost {
                            " (membership lost: not committed)"
                        } else {
                            ""
                        }
                    ));
                }
                if !lost {
                    let mine = self.still_the_same_topics(self.positions_of(&parts)).await;
                    self.commit_these(&mine, true).await;
                }
                for (t, ps) in &parts {
                    if let Some(id) = self.consumer.topic_id(t) {
                        self.given_back_ids.insert(t.clone(), id);
                    }
                    let ps: Vec<i32> = ps.iter().copied().collect();
                    for (p, _fetched_to) in self.consumer.unassign(t, &ps) {
                        let key = (t.clone(), p);
                        // Where printing got to. A partition without one printed nothing since it
                        // was assigned (its start was not known then): taken back, it starts as it
                        // would have — the fetch position, past records fetched and not printed,
                        // skipped them (t49).
                        if let Some(pos) = self.positions.remove(&key) {
                            self.given_back.insert(key, pos);
                        }
                    }
                }
                // Membership lost and nothing left: -e waits for the rejoin's assignment (with
                // none, every partition "was at its end" and a consumer fenced while its stdout
                // was blocked exited 0 after 142,508 of 400,000 records).
                // So does a classic member in every rebalance: it gives back everything, then is
                // assigned again (it exited, at the end of nothing, and left its share unread).
                let reassigned = lost
                    || self
                        .member
                        .as_ref()
                        .is_some_and(Member::assigns_after_revoke);
                if reassigned && !self.consumer.has_partitions() {
                    self.assigned = false;
                }
                let _ = done.send(());
                Ok(())
            }
        }
    }

    /// Says once why a group member still has no partitions after [`WAIT_SAID_AFTER`]: a rebalance
    /// waits for a member that stopped without leaving until its session times out (10-33 s
    /// of silence before "reading" after a consumer of the group was killed). Under the consumer
    /// protocol the member is told "nothing" at once and given partitions when their owner lets go
    /// or expires: "reading nothing", then 45 s of silence behind a stopped kcat member.
    fn say_if_waiting(&mut self) {
        let Some(m) = &self.member else { return };
        if self.assigned && self.consumer.has_partitions() {
            self.waiting.0 = None;
            return;
        }
        let since = *self.waiting.0.get_or_insert_with(Instant::now);
        if !self.waiting.1 && since.elapsed() >= WAIT_SAID_AFTER {
            self.waiting.1 = true;
            let now = match self.assigned {
                false => "waiting for partitions: a rebalance waits for every member, and",
                true => "no partitions for this member yet: each is another member's (more members than partitions?), and",
            };
            crate::log::info(format_args!(
                "group '{}': {now} one that stopped without leaving (killed, or cut off) holds its partitions until its session times out (up to 45 s with Kafka's defaults; shipper's own is --session-timeout-ms, 10 s)",
                Esc::str(m.group())
            ));
        }
    }

    /// Starts reading newly assigned partitions: from the committed offset, or where this process
    /// stopped if it read further, else by the start rule.
    async fn take(&mut self, a: &Assignment) -> anyhow::Result<()> {
        let Some(m) = &self.member else {
            return Ok(());
        };
        let committed = m.committed(a).await?;
        for (t, ps) in a {
            let least = ps
                .last()
                .map_or(0, |&p| usize::try_from(p).map_or(0, |p| p + 1));
            let meta = self.cluster.topic_with_partitions(t, least).await?;
            // A leader with older metadata (another client, or a topic created again with fewer
            // partitions since it looked) may assign partitions the topic no longer has: said and
            // left, and the rest read; the next assignment corrects it.
            let count = i32::try_from(meta.partitions.len()).unwrap_or(i32::MAX);
            let (ps, gone): (BTreeSet<i32>, BTreeSet<i32>) =
                ps.iter().partition(|&&p| (0..count).contains(&p));
            if !gone.is_empty() {
                crate::log::warn(format_args!(
                    "group '{}': assigned partition(s) {} of '{}', which has {count} partition(s) now: those are not read",
                    Esc::str(m.group()),
                    crate::escape::partitions(&gone),
                    Esc::str(t)
                ));
            }
            if ps.is_empty() {
                continue;
            }
            // Given back from a topic of this name that has been deleted and created again: not
            // a place in this one.
            let same = self
                .given_back_ids
                .get(t)
                .is_none_or(|&id| same_topic(id, meta.id));
            let mut from = HashMap::new();
            for &p in &ps {
                let key = (t.clone(), p);
                let c = committed.get(&key).copied();
                let back = self.given_back.remove(&key).filter(|_| same);
                if let Some(o) = c.into_iter().chain(back).max() {
                    from.insert(p, o);
                }
            }
            let ps: Vec<i32> = ps.iter().copied().collect();
            let ti = self
                .consumer
                .assign_from(meta, &ps, &from, self.start)
                .await?;
            // Where each starts is a position too: committed as it is until records move it, so the
            // start rule is applied once, at the group's first read, as the Java consumer does.
            for (i, p, o) in self.consumer.positions() {
                if i == ti && ps.contains(&p) {
                    self.positions.insert((t.clone(), p), o);
                }
            }
        }
        self.assigned = true;
        crate::log::info(format_args!(
            "group '{}': reading {}",
            Esc::str(m.group()),
            crate::group::assignment_text(a)
        ));
        Ok(())
    }

    /// `offsets` without those of topics deleted (or deleted and created again) since they were
    /// read: committed by name, a position in the old topic would stand for the new one, and the
    /// group's next reader would skip its first records (t29 F1: up to 81). The topics are asked
    /// for anew (this runs when partitions are given back, not per record).
    async fn still_the_same_topics(&self, mut offsets: Offsets) -> Offsets {
        let topics: BTreeSet<String> = offsets.keys().map(|(t, _)| t.clone()).collect();
        for t in topics {
            let Some(read) = self.consumer.topic_id(&t) else {
                continue;
            };
            let gone = match self.cluster.topic_current(&t).await {
                Ok(now) => !same_topic(read, now.id),
                Err(e) => matches!(
                    e.code(),
                    Some(Code::UnknownTopicOrPartition | Code::UnknownTopicId)
                ),
            };
            if gone {
                crate::log::warn(format_args!(
                    "topic '{}' was deleted since it was read: its positions are not committed (they would stand for a topic created again under its name)",
                    Esc::str(&t)
                ));
                offsets.retain(|(name, _), _| name != &t);
            }
        }
        offsets
    }

    fn positions_of(&self, parts: &Assignment) -> Offsets {
        self.positions
            .iter()
            .filter(|((t, p), _)| parts.get(t).is_some_and(|ps| ps.contains(p)))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    async fn commit_all(&mut self, loud: bool) {
        let all = self.positions.clone();
        self.commit_these(&all, loud).await;
    }

    /// Commits (when committing is on); a failure is said (at debug level when the group merely
    /// moved on and the next commit will do), never fatal: the records are printed already.
    async fn commit_these(&mut self, offsets: &Offsets, loud: bool) {
        // An older commit still under way ends first: landing after this one, it would move the
        // group's offsets back.
        self.settle_commit().await;
        let (Some(m), Some(_)) = (&self.member, self.commit) else {
            return;
        };
        let r = m.commit(offsets).await;
        match r {
            Ok(true) => self.commit_news(None),
            Ok(false) => {}
            Err(e) if !loud || offsets::is_stale(&e) => {
                crate::log::debug(format_args!("commit: {e}"))
            }
            Err(e) => crate::log::warn(format_args!("{}", commit_failed(m.group(), &e))),
        }
    }

    /// Looks at how the last commit went (`Some`: it failed, not merely stale, and when it was
    /// sent) and says what is due: that commits fail, or that they land again after a failure that
    /// was said (counted from the first failing commit's start, not its end).
    fn commit_news(&mut self, failed: Option<(&Error, Instant)>) {
        let group = self.member.as_ref().map(|m| m.group().to_string());
        let group = Esc::str(group.as_deref().unwrap_or_default());
        match self
            .commit_trouble
            .look_at(failed.map(|(e, t)| (e.to_string(), t)), Instant::now())
        {
            Some(TroubleNews::Failing(e, for_)) => crate::log::warn(format_args!(
                "group '{group}': offsets not committed{} ({e}); reading goes on, and the next periodic commit sends them again",
                if for_ < Duration::from_secs(1) {
                    String::new()
                } else {
                    format!(" for {} s", for_.as_secs())
                }
            )),
            Some(TroubleNews::Recovered(after)) => crate::log::info(format_args!(
                "group '{group}': offsets committed again after {:.1}s",
                after.as_secs_f64()
            )),
            None => {}
        }
    }

    /// Waits for the periodic commit under way, if any; its failure is said at debug level (the
    /// next commit will do, and the last one is loud).
    async fn settle_commit(&mut self) {
        let Some((h, began)) = self.committing.take() else {
            return;
        };
        match h.await {
            Ok(Ok(())) => self.commit_news(None),
            Ok(Err(e)) => {
                self.periodic_sent.clear();
                crate::log::debug(format_args!("commit: {e}"));
                if !offsets::is_stale(&e) {
                    self.commit_news(Some((&e, began)));
                }
            }
            Err(e) => {
                self.periodic_sent.clear();
                crate::log::debug(format_args!("commit task: {e}"))
            }
        }
    }

    /// Commits what was printed and leaves the group (if in one).
    async fn commit_and_leave(&mut self, ok: bool) {
        if ok {
            self.commit_all(true).await;
        } else if self.member.is_some() && self.commit.is_some() {
            // Stopped by an error (a read refused, Kafka gone): what was printed is committed if
            // the coordinator still answers, so the group's next reader does not print it again;
            // said when it cannot be (a refusal is said by the commit itself).
            let group = self.member.as_ref().map(|m| m.group().to_string());
            let limit = Duration::from_secs(5);
            if tokio::time::timeout(limit, self.commit_all(true))
                .await
                .is_err()
            {
                crate::log::warn(format_args!(
                    "group '{}': the offsets of what was printed since the last commit may not be committed (no answer within 5 s); if not, the group's next reader starts at the last commit",
                    Esc::str(group.as_deref().unwrap_or_default())
                ));
            }
        }
        if let Some(m) = self.member.take() {
            m.leave().await;
        }
    }

    /// Flushes, commits and leaves the group; the exit code.
    async fn finish(
        mut self,
        result: anyhow::Result<()>,
        topics: &[String],
    ) -> anyhow::Result<i32> {
        // A stdout that failed (a full disk) still commits what it took and leaves the group.
        let drained = self.drain(true).await;
        let result = result.and(drained);
        let unwritten = self.out.unwritten();
        if result.is_ok() && unwritten > 0 {
            // A second signal ended the wait for a stdout that takes nothing.
            crate::log::warn(format_args!(
                "standard output did not take the last {unwritten} bytes of records: not printed{}",
                if self.member.is_some() && self.commit.is_some() {
                    ", and not committed"
                } else {
                    ""
                }
            ));
        }
        // A group member's failure is said before it commits and leaves, so that what the commit
        // says follows its cause (t30 O2: "offsets not committed (... TOPIC_AUTHORIZATION_FAILED)"
        // came before the error that ended the read); the exit code is then 1, unsaid again.
        let said = match &result {
            Err(e)
                if self.member.is_some()
                    && !crate::error::is_broken_pipe(e)
                    && e.downcast_ref::<crate::settings::UsageError>().is_none() =>
            {
                crate::log::error(format_args!("{e:#}"));
                true
            }
            _ => false,
        };
        // Commits and leaves the group; a signal meanwhile stops at once (t19 F3: an unanswered
        // commit held the exit for 19 s, a second Ctrl-C ignored).
        let mut stop = std::pin::pin!(crate::tasks::stop_signal());
        let group = self.member.as_ref().map(|m| m.group().to_string());
        let stopped = tokio::select! {
            _ = self.commit_and_leave(result.is_ok()) => false,
            _ = &mut stop => true,
        };
        if stopped && group.is_some() {
            crate::log::warn(format_args!(
                "group '{}': stopped at once: the offsets may not be committed, and the group may not be left",
                Esc::str(group.as_deref().unwrap_or_default())
            ));
        }
        if said {
            return Ok(1);
        }
        result?;
        // The topics asked for, each once (not only those a fetch reached: `-o end -e` reads none).
        let topics: BTreeMap<&str, ()> = topics.iter().map(|t| (t.as_str(), ())).collect();
        crate::log::info(format_args!(
            "consumed {} record{} from {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            topics
                .keys()
                .map(|t| format!("'{}'", Esc::str(t)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(0)
    }
}

/// A chunk of output: its partition, the position its records reach, and how many records it holds.
type Reached = ((String, i32), i64, u64);

/// Bytes of formatted records handed to standard output's thread at a time.
const TEXT_CHUNK: usize = 64 * 1024;

/// An answer held while standard output was full is formatted on once this little waits.
const RESUME_BELOW: usize = crate::output::behind::HIGH_WATER / 4;

/// How often failing periodic commits are said again while they fail.
const COMMIT_TROUBLE_EVERY: Duration = Duration::from_secs(60);

/// Records formatted for standard output, copied in with the short-copy path.
struct Text(Vec<u8>);

impl Write for Text {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        crate::fastcopy::extend(&mut self.0, b);
        Ok(b.len())
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        crate::fastcopy::extend(&mut self.0, b);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sleeps until `d`, or forever.
async fn until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a failed final commit says: whether the offsets may have landed, and what the group's next
/// reader does.
fn commit_failed(group: &str, e: &Error) -> String {
    let group = Esc::str(group);
    match e.code() {
        // The topic (or these partitions of it) is gone: there is no next reader to resume (t27
        // F3: "whoever reads these partitions next" was said of a deleted topic).
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopicId) => format!(
            "group '{group}': offsets not committed ({e}): the topic or partition no longer exists (deleted?), so there is nothing to resume from"
        ),
        // Refused: not committed.
        Some(_) => format!(
            "group '{group}': offsets not committed ({e}); whoever reads these partitions next starts at the last commit"
        ),
        // No answer (a timeout, a garbled one): the commit may have landed (t19 F4: said "not
        // committed" when the broker had committed).
        None => format!(
            "group '{group}': offsets may not be committed ({e}: sent, but no answer came); if not, whoever reads these partitions next starts at the last commit"
        ),
    }
}

/// Whether two topic ids name the same topic: equal, or one unknown (a broker that gives none).
fn same_topic(a: [u8; 16], b: [u8; 16]) -> bool {
    a == b || a == [0; 16] || b == [0; 16]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Target;

    fn refused(code: Code) -> Error {
        Error::Kafka {
            api: "OffsetCommit",
            target: Target::Partition("t".into(), 3),
            code,
        }
    }

    #[test]
    fn a_commit_refused_for_a_deleted_topic_does_not_promise_a_next_reader() {
        for code in [Code::UnknownTopicOrPartition, Code::UnknownTopicId] {
            let said = commit_failed("g", &refused(code));
            assert!(said.contains("no longer exists"), "{said}");
            assert!(!said.contains("whoever reads"), "{said}");
        }
        let said = commit_failed("g", &refused(Code::GroupAuthorizationFailed));
        assert!(said.contains("offsets not committed"), "{said}");
        assert!(
            said.contains("whoever reads these partitions next"),
            "{said}"
        );
    }
}
