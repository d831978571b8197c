//! Consumer groups: joining a group, being told which partitions to read, giving them back when the
//! group rebalances, and committing offsets.
//!
//! A background task keeps the membership ([`classic`]: JoinGroup / SyncGroup / Heartbeat with the
//! range assignor, so Java and kcat members share the group; [`next`]: KIP-848's
//! ConsumerGroupHeartbeat, where the broker assigns). It tells the reading loop what changed as
//! [`Event`]s; before giving partitions back it waits until the loop has written out and committed
//! what it read from them, so the next owner starts exactly after it. Membership and commits each
//! have their own connection to the coordinator ([`coordinator`]).

pub mod assign;
mod classic;
pub mod coordinator;
pub mod describe;
mod next;
pub mod offsets;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use assign::{assignment_text, Assignment};
use coordinator::Coordinator;
pub use offsets::{Generation, Offsets};

use crate::cluster::Cluster;
use crate::error::{Code, Error, Result};

/// How often an offset fetch refused with STALE_MEMBER_EPOCH (the member's epoch moved on
/// meanwhile), UNKNOWN_MEMBER_ID or FENCED_MEMBER_EPOCH (fenced meanwhile) is asked again as the
/// member is now.
const STALE_RETRIES: u32 = 10;

/// Which group protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    /// The consumer protocol (KIP-848) when the coordinator offers it, else classic.
    Auto,
    /// JoinGroup / SyncGroup / Heartbeat, with the range assignor (Kafka 2.x-4.x, Java, kcat).
    Classic,
    /// ConsumerGroupHeartbeat, assignment by the broker (Kafka 4.0+).
    Consumer,
}

/// How to be a member.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group id.
    pub group: String,
    /// The topics to read.
    pub topics: Vec<String>,
    /// Which protocol.
    pub protocol: GroupProtocol,
    /// Classic: how long the coordinator waits without a heartbeat before it drops us.
    pub session_timeout: Duration,
    /// How long the coordinator waits for members to rejoin during a rebalance.
    pub rebalance_timeout: Duration,
    /// Classic: how often to heartbeat.
    pub heartbeat_interval: Duration,
}

impl GroupConfig {
    /// Defaults for `group` reading `topics`.
    pub fn new(group: &str, topics: &[String]) -> Self {
        GroupConfig {
            group: group.to_string(),
            topics: topics.to_vec(),
            protocol: GroupProtocol::Auto,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(3),
        }
    }
}

/// What the membership tells the reading loop.
#[derive(Debug)]
pub enum Event {
    /// These partitions are ours now.
    Assigned(Assignment),
    /// These partitions are to be given back: write out and commit what was read from them (unless
    /// `lost`: the group already gave them to others, a commit would be refused), stop reading them,
    /// then answer on `done`.
    Revoke {
        /// The partitions.
        parts: Assignment,
        /// The membership was lost (session expired, fenced): do not commit.
        lost: bool,
        /// Answered when they are given up.
        done: oneshot::Sender<()>,
    },
}

/// State the membership task and the reading loop share.
#[derive(Debug, Default)]
struct Shared {
    /// The member's current generation, when it may commit.
    gen: Mutex<Option<Generation>>,
    /// The member id, once the coordinator knows one (for leaving).
    member_id: Mutex<Option<String>>,
    /// Whether the member speaks the consumer protocol (KIP-848); false after falling back to the
    /// classic one.
    consumer_protocol: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn set_gen(&self, g: Option<Generation>) {
        if let Some(g) = &g {
            *self.member_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(g.member_id.clone());
        }
        *self.gen.lock().unwrap_or_else(|e| e.into_inner()) = g;
    }
    fn gen(&self) -> Option<Generation> {
        self.gen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn member_id(&self) -> Option<String> {
        self.member_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn set_consumer_protocol(&self, on: bool) {
        self.consumer_protocol
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }
    fn protocol(&self) -> GroupProtocol {
        if self
            .consumer_protocol
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            GroupProtocol::Consumer
        } else {
            GroupProtocol::Classic
        }
    }
}

/// What the membership task is given.
struct Ctx {
    cfg: GroupConfig,
    coord: Coordinator,
    shared: Arc<Shared>,
    events: mpsc::Sender<Result<Event>>,
}

impl Ctx {
    /// Sends a revocation and waits until the loop has given the partitions up. False when the loop
    /// is gone.
    async fn revoke(&self, parts: Assignment, lost: bool) -> bool {
        if parts.values().all(|s| s.is_empty()) {
            return true;
        }
        let (done, wait) = oneshot::channel();
        if self
            .events
            .send(Ok(Event::Revoke { parts, lost, done }))
            .await
            .is_err()
        {
            return false;
        }
        wait.await.is_ok()
    }
}

/// A member of a group: events from its membership task, and commits.
pub struct Member {
    cfg: GroupConfig,
    events: mpsc::Receiver<Result<Event>>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    /// Commits and offset fetches: a connection apart from the membership's, which a join may hold.
    offsets: Arc<Coordinator>,
}

impl Member {
    /// Joins the group (in the background; assignments arrive as events).
    pub async fn join(cluster: Arc<Cluster>, cfg: GroupConfig) -> Result<Member> {
        let coord = Coordinator::new(cluster.clone(), &cfg.group);
        let deadline = cluster.options().deadline();
        let protocol = match cfg.protocol {
            GroupProtocol::Auto => {
                let conn = crate::backoff::retry(deadline, |d| coord.connection(d)).await?;
                if conn.supports::<ConsumerGroupHeartbeatRequest>() {
                    GroupProtocol::Consumer
                } else {
                    GroupProtocol::Classic
                }
            }
            p => p,
        };
        crate::log::debug(format_args!(
            "group '{}': {}",
            crate::escape::Esc::str(&cfg.group),
            match protocol {
                GroupProtocol::Consumer => "the consumer protocol (KIP-848: the broker assigns)",
                _ => "the classic protocol",
            }
        ));
        let shared = Arc::new(Shared::default());
        shared.set_consumer_protocol(protocol == GroupProtocol::Consumer);
        let (tx, rx) = mpsc::channel(4);
        let ctx = Ctx {
            cfg: cfg.clone(),
            coord,
            shared: shared.clone(),
            events: tx,
        };
        let task = match protocol {
            GroupProtocol::Consumer => {
                tokio::spawn(next::run(ctx, cfg.protocol == GroupProtocol::Auto))
            }
            _ => tokio::spawn(classic::run(ctx)),
        };
        crate::log::debug(format_args!(
            "group '{}': joining with the {} protocol",
            crate::escape::Esc::str(&cfg.group),
            if protocol == GroupProtocol::Consumer {
                "consumer"
            } else {
                "classic"
            }
        ));
        Ok(Member {
            offsets: Arc::new(Coordinator::new(cluster, &cfg.group)),
            cfg,
            events: rx,
            task,
            shared,
        })
    }

    /// The next event; `None` when the membership task has ended. Cancel-safe.
    pub async fn event(&mut self) -> Option<Result<Event>> {
        self.events.recv().await
    }

    /// The next event if there is one now: `None` when there is none, `Some(None)` when the
    /// membership task has ended.
    pub fn try_event(&mut self) -> Option<Option<Result<Event>>> {
        match self.events.try_recv() {
            Ok(e) => Some(Some(e)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
        }
    }

    /// The committed offsets of these partitions (those with none are left out).
    pub async fn committed(&self, parts: &Assignment) -> Result<Offsets> {
        let topics: Vec<(String, Vec<i32>)> = parts
            .iter()
            .map(|(t, ps)| (t.clone(), ps.iter().copied().collect()))
            .collect();
        if topics.is_empty() {
            return Ok(Offsets::new());
        }
        let deadline = self.offsets.cluster().options().deadline();
        let mut stale = 0;
        loop {
            let gen = match self.shared.protocol() {
                GroupProtocol::Consumer => self.shared.gen(),
                _ => None,
            };
            match offsets::fetch(&self.offsets, Some(&topics), gen.as_ref(), deadline).await {
                // The member's epoch moved on while the request went (a new assignment came in the
                // same moment): asked again as the member is now (t21 run: two members of three
                // ended at STALE_MEMBER_EPOCH). So when the coordinator fenced the member meanwhile:
                // the heartbeat rejoins, and the offsets are asked as the member is then (a member
                // ended at UNKNOWN_MEMBER_ID, its topic deleted and created again under it).
                Err(Error::Kafka {
                    code: Code::StaleMemberEpoch | Code::UnknownMemberId | Code::FencedMemberEpoch,
                    ..
                }) if stale < STALE_RETRIES => {
                    stale += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
    }

    /// Commits `offsets` as the current generation. `Ok(false)` when there is none to commit as (a
    /// rebalance is under way).
    pub async fn commit(&self, offsets: &Offsets) -> Result<bool> {
        let Some(gen) = self.shared.gen() else {
            return Ok(false);
        };
        commit_as(&self.offsets, gen, offsets).await?;
        Ok(true)
    }

    /// [`Member::commit`] in a task of its own, for a caller that reads on meanwhile (a coordinator
    /// that does not answer holds a commit for up to its 10 s limit). `None` when there is no
    /// generation to commit as. The caller keeps commits in order: the next one after this ends.
    pub fn commit_later(&self, offsets: Offsets) -> Option<JoinHandle<Result<()>>> {
        let gen = self.shared.gen()?;
        let coord = self.offsets.clone();
        Some(tokio::spawn(async move {
            commit_as(&coord, gen, &offsets).await
        }))
    }

    /// The group id.
    pub fn group(&self) -> &str {
        &self.cfg.group
    }

    /// Whether every give-back is followed by an assignment (perhaps empty): the classic protocol,
    /// whose rebalances give back everything and assign again. On the consumer protocol, a member
    /// is told only of partitions it gains.
    pub fn assigns_after_revoke(&self) -> bool {
        self.shared.protocol() == GroupProtocol::Classic
    }

    /// Leaves the group (so its partitions move at once, not after a session timeout).
    pub async fn leave(self) {
        self.task.abort();
        let Some(member_id) = self.shared.member_id() else {
            return;
        };
        let until = Some(Instant::now() + Duration::from_secs(5));
        let r = crate::backoff::bounded_by("leaving the group", async {
            match self.shared.protocol() {
                GroupProtocol::Consumer => next::leave(&self.offsets, &member_id, until).await,
                _ => classic::leave(&self.offsets, &member_id, until).await,
            }
        })
        .await;
        if let Err(e) = r {
            crate::log::warn(format_args!(
                "group '{}': could not leave cleanly, its partitions move after the session timeout: {e}",
                crate::escape::Esc::str(&self.cfg.group)
            ));
        }
    }
}

/// Commits `offsets` as `gen`, within the commit's own limit (10 s).
async fn commit_as(coord: &Coordinator, gen: Generation, offsets: &Offsets) -> Result<()> {
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    crate::backoff::bounded_by(
        "offset commit",
        offsets::commit(coord, Some(&gen), offsets, deadline),
    )
    .await
}

#[cfg(test)]
mod tests;
