//! Start-up, the accept loop and graceful shutdown.
//!
//! Start-up prints the three lines the blog's users know (and scripts wait
//! for). On SIGTERM (Swarm stopping a task) or SIGINT the listener closes at
//! once, in-flight requests finish, idle keep-alive connections are closed,
//! and the process exits 0; a second signal or the drain timeout cuts it short.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::app::App;
use crate::breaker::Breaker;
use crate::cli::ServeArgs;
use crate::metrics::Metrics;
use crate::quote::QuoteClient;
use crate::store::{Store, StoreError};
use crate::{memory, netinfo, routes};

const SEEDED_ACCOUNTS: u64 = 100;

/// A slow client may take this long to send its request head before hyper
/// drops the connection, so idle sockets cannot pile up forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum ServeError {
    Store(StoreError),
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
            ServeError::Store(e) => write!(f, "account store: {e}"),
            ServeError::Runtime(e) => write!(f, "starting the async runtime: {e}"),
            ServeError::Bind { addr, source } => write!(f, "listening on {addr}: {source}"),
            ServeError::Signals(e) => write!(f, "installing signal handlers: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    let workers = args.worker_threads();
    // One arena per worker thread at most; see memory.rs for why.
    memory::limit_malloc_arenas(workers.clamp(1, 4) as i32);

    println!("Starting accountservice");
    let store = Store::open(&args.db, args.db_cache_kib * 1024).map_err(ServeError::Store)?;
    let added = store.seed(SEEDED_ACCOUNTS).map_err(ServeError::Store)?;
    println!("Seeded {SEEDED_ACCOUNTS} fake accounts...");
    eprintln!(
        "database {} ({added} accounts added, the others already there)",
        args.db.display()
    );

    let quotes = args.quotes_url().map(|url| {
        QuoteClient::new(
            url,
            args.quotes_timeout(),
            Breaker::new(args.quotes_breaker_threshold, args.breaker_pause()),
        )
    });
    let app = Arc::new(App {
        store,
        served_by_field: routes::served_by_field(&netinfo::served_by()),
        forced_down: AtomicBool::new(false),
        metrics: Metrics::default(),
        quotes,
    });

    // With two or more cores, a second worker pays off even where the load
    // generator shares them (measured: about +7% req/s on 2 cores).
    let mut runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = runtime.enable_all().build().map_err(ServeError::Runtime)?;
    let addr = SocketAddr::new(args.bind, args.port);
    runtime.block_on(serve(app, addr, args.drain_timeout()))
}

async fn serve(app: Arc<App>, addr: SocketAddr, drain: Duration) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let port = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?
        .port();
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    println!("Starting HTTP service at {port}");

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // Bodies are a few hundred bytes: copying them behind the head and
        // issuing one plain write is cheaper than a two-buffer writev.
        .writev(false);
    let graceful = GracefulShutdown::new();

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Responses are small and written whole; don't let Nagle
                    // hold them back.
                    let _ = stream.set_nodelay(true);
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
        _ = next_signal(&mut sigterm, &mut sigint) => eprintln!("second signal; exiting now"),
    }
    Ok(())
}

async fn next_signal(a: &mut Signal, b: &mut Signal) {
    tokio::select! {
        _ = a.recv() => {}
        _ = b.recv() => {}
    }
}
