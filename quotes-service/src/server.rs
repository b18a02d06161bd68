//! Start-up, the accept loop and graceful shutdown, as the accountservice
//! does them: on SIGTERM (Swarm stopping a task) or SIGINT the listener
//! closes, in-flight requests finish, idle connections close and the process
//! exits 0; a second signal or the drain timeout cuts it short.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::ServeArgs;
use crate::netinfo;
use crate::quotes::Quotes;
use crate::routes::{self, App};

/// A slow client may take this long to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum ServeError {
    Runtime(std::io::Error),
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    Signals(std::io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Runtime(e) => write!(f, "starting the async runtime: {e}"),
            ServeError::Bind { addr, source } => {
                write!(
                    f,
                    "listening on {addr}: {source} (pick another with --port)"
                )
            }
            ServeError::Signals(e) => write!(f, "installing signal handlers: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

pub fn run(args: &ServeArgs) -> Result<(), ServeError> {
    // One async thread is plenty for two tiny routes; the CPU work runs on
    // blocking threads, at most one per core so a flood of heavy requests
    // queues instead of multiplying threads.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(cores)
        .build()
        .map_err(ServeError::Runtime)?;
    let addr = SocketAddr::new(args.bind, args.port);
    runtime.block_on(serve(addr, Duration::from_millis(args.drain_ms)))
}

async fn serve(addr: SocketAddr, drain: Duration) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let port = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?
        .port();
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let app = Arc::new(App {
        quotes: Quotes::default(),
        ip_address: format!("{}:{port}", netinfo::served_by()),
    });
    eprintln!(
        "quotes-service listening on {}:{port}, answering as {}",
        addr.ip(),
        app.ip_address
    );

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let app = Arc::clone(&app);
                    let service = service_fn(move |req| routes::handle(Arc::clone(&app), req));
                    let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        // Client resets and timeouts are routine; nothing to report.
                        let _ = connection.await;
                    });
                }
                Err(err) => {
                    // Usually EMFILE: back off instead of spinning.
                    eprintln!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = sigterm.recv() => { eprintln!("SIGTERM: draining"); break; }
            _ = sigint.recv() => { eprintln!("SIGINT: draining"); break; }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => eprintln!("all connections drained; bye"),
        () = tokio::time::sleep(drain) => eprintln!("drain took longer than {drain:?}; exiting anyway"),
        _ = sigterm.recv() => eprintln!("second signal; exiting now"),
        _ = sigint.recv() => eprintln!("second signal; exiting now"),
    }
    Ok(())
}
