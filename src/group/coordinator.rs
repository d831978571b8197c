//! The group's coordinator: found with FindCoordinator, reached over a connection of its own (a group
//! join is held by the broker until the whole group has joined, and a broker answers one connection's
//! requests in order, so sharing it would stall fetches), found again after NOT_COORDINATOR or a
//! broken connection.

use std::sync::{Arc, Mutex};

use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::{Request, StrBytes, VersionRange};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::connection::Connection;
use crate::error::{code, Code, Error, Result, Target};

/// FindCoordinator with a list of keys (KIP-699): Kafka 3.0+.
const FIND_COORDINATOR_VERSIONS: VersionRange = VersionRange { min: 4, max: 6 };

/// One connection to a group's coordinator, found again when it moves.
pub struct Coordinator {
    cluster: Arc<Cluster>,
    group: String,
    conn: Mutex<Option<Arc<Connection>>>,
}

impl Coordinator {
    /// A coordinator for `group`, not found yet.
    pub fn new(cluster: Arc<Cluster>, group: &str) -> Self {
        Coordinator {
            cluster,
            group: group.to_string(),
            conn: Mutex::new(None),
        }
    }

    /// The group id.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The cluster.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The target for messages.
    pub fn target(&self) -> Target {
        Target::Group(self.group.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Connection>>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the connection (the coordinator moved, or the connection broke); the next call finds
    /// the coordinator again.
    pub fn reset(&self) {
        if let Some(c) = self.lock().take() {
            c.close();
        }
    }

    /// The open connection to the coordinator, finding and connecting to it (one attempt) if needed.
    pub async fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Connection>> {
        if let Some(c) = self.lock().as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let addr = self.find(deadline).await?;
        let c = Arc::new(self.cluster.dedicated(&addr, deadline).await?);
        *self.lock() = Some(c.clone());
        Ok(c)
    }

    /// One FindCoordinator round trip to any broker: the coordinator's address.
    async fn find(&self, deadline: Option<Instant>) -> Result<String> {
        let conn = self.cluster.any_connection(deadline).await?;
        let version = conn.version::<FindCoordinatorRequest>(FIND_COORDINATOR_VERSIONS)?;
        let mut req = FindCoordinatorRequest::default();
        req.key_type = 0;
        req.coordinator_keys = vec![StrBytes::from_string(self.group.clone())];
        let resp = conn
            .call(&req, version, conn.request_deadline(deadline))
            .await?;
        let Some(c) = resp.coordinators.into_iter().next() else {
            return Err(Error::Incomplete {
                api: "FindCoordinator",
                target: self.target(),
                what: "no coordinator in the answer",
            });
        };
        if let Some(code) = code(c.error_code) {
            return Err(Error::Kafka {
                api: "FindCoordinator",
                target: self.target(),
                code,
            });
        }
        let addr = format!("{}:{}", c.host.as_str(), c.port);
        self.cluster.add_broker(c.node_id.0, addr.clone());
        // Named by the cluster: a hang there is a broker's, not another protocol's server's.
        crate::connection::note_listed(&addr);
        crate::log::debug(format_args!(
            "group '{}': coordinator is broker {} at {}",
            crate::escape::Esc::str(&self.group),
            c.node_id.0,
            crate::escape::Esc::str(&addr)
        ));
        Ok(addr)
    }

    /// Sends `req` to the coordinator and returns its answer, retrying until `deadline` what retrying
    /// can fix: an unreachable or moved coordinator, one still loading. `error_of` reads the answer's
    /// top-level error code. The answer is returned with its error when that is not a coordinator
    /// problem, for the caller to judge.
    pub async fn call<R: Request>(
        &self,
        req: &R,
        versions: VersionRange,
        deadline: Option<Instant>,
        hold: Option<std::time::Duration>,
        error_of: impl Fn(&R::Response) -> i16,
    ) -> Result<(R::Response, i16)> {
        let error_of = &error_of;
        crate::backoff::retry_held(deadline, hold.unwrap_or_default(), |d| async move {
            let conn = self.connection(d).await?;
            let version = conn.version::<R>(versions)?;
            let mut until = conn.request_deadline(d);
            if let Some(h) = hold {
                until += h;
            }
            let resp = match conn.call(req, version, until).await {
                Ok(r) => r,
                Err(e) => {
                    self.reset();
                    return Err(e.into());
                }
            };
            match code(error_of(&resp)) {
                Some(c @ (Code::NotCoordinator | Code::CoordinatorNotAvailable)) => {
                    self.reset();
                    Err(self.error(api_name::<R>(), c))
                }
                Some(c @ Code::CoordinatorLoadInProgress) => Err(self.error(api_name::<R>(), c)),
                _ => Ok((resp, version)),
            }
        })
        .await
    }

    /// A broker error about this group.
    pub fn error(&self, api: &'static str, code: Code) -> Error {
        Error::Kafka {
            api,
            target: self.target(),
            code,
        }
    }
}

/// The API's name, for messages.
pub fn api_name<R: Request>() -> &'static str {
    crate::wire::codec::api_name(R::KEY)
}
