//! The listener: HTTP/1.1 and HTTP/2 (prior knowledge) on one port through
//! hyper-util's auto builder; graceful shutdown lets answers in progress end.

use super::{Cache, ClientAddr};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves `cache` on `listener` until `shutdown` resolves; then waits up to
/// `drain` for connections to finish their answers.
pub async fn serve(listener: TcpListener, cache: Cache, shutdown: impl Future<Output = ()>, drain: Duration) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(error = %e, "cache accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let cache = cache.clone();
        let client = ClientAddr(peer.ip());
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let cache = cache.clone();
            req.extensions_mut().insert(client);
            async move { Ok::<_, Infallible>(cache.handle(req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "cache connection ended");
            }
        });
    }
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}
