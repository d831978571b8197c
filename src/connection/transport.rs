//! How streams to brokers are made: the [`Transport`] seam, and plain TCP.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::ConnError;

/// A byte stream to a broker.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed stream, as transports return it.
pub type BoxIo = Box<dyn Io>;

/// A boxed future, for the object-safe [`Transport`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How streams to brokers are made: TCP (and TLS) in the product, an in-memory fake broker in unit tests.
/// This is the seam that lets every error path above the wire be driven without a real broker.
pub trait Transport: Send + Sync + 'static {
    /// Opens a stream to `addr` (`host:port`), giving up at `until`.
    fn connect<'a>(
        &'a self,
        addr: &'a str,
        until: Instant,
    ) -> BoxFuture<'a, Result<BoxIo, ConnError>>;
}

/// Plain TCP with Nagle off and TCP keepalive on (a broker host that vanishes is noticed by the kernel
/// even on an idle connection).
#[derive(Debug, Clone, Default)]
pub struct TcpTransport;

impl Transport for TcpTransport {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
        until: Instant,
    ) -> BoxFuture<'a, Result<BoxIo, ConnError>> {
        Box::pin(async move {
            let s = tcp_connect(addr, until).await?;
            Ok(Box::new(s) as BoxIo)
        })
    }
}

/// Resolves `addr` and connects to the first address that answers, before `until`.
pub async fn tcp_connect(addr: &str, until: Instant) -> Result<tokio::net::TcpStream, ConnError> {
    let resolved = tokio::time::timeout_at(until, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| ConnError::Resolve {
            addr: addr.to_string(),
            detail: "timed out".into(),
        })?
        .map_err(|e| ConnError::Resolve {
            addr: addr.to_string(),
            detail: e.to_string(),
        })?;
    let mut last = "no address".to_string();
    for sa in resolved {
        match tokio::time::timeout_at(until, tokio::net::TcpStream::connect(sa)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                let ka = socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(60))
                    .with_interval(Duration::from_secs(10))
                    .with_retries(3);
                let _ = socket2::SockRef::from(&s).set_tcp_keepalive(&ka);
                return Ok(s);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connect timed out".into(),
        }
    }
    Err(ConnError::Connect {
        addr: addr.to_string(),
        detail: last,
    })
}
