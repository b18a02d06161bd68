//! Start-up: the store, the shared state and the runtime.
//!
//! Start-up prints the three lines the blog's users know (and scripts wait
//! for). The accept loop and graceful shutdown are `service_kit::serve`'s,
//! shared with the quotes-service.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use service_kit::netinfo;

use crate::app::App;
use crate::breaker::Breaker;
use crate::cli::ServeArgs;
use crate::metrics::Metrics;
use crate::quote::QuoteClient;
use crate::store::{Store, StoreError};
use crate::{memory, routes};

const SEEDED_ACCOUNTS: u64 = 100;

/// Why the accountservice could not serve: its own store, or what any
/// service can hit (bind, runtime, signals).
#[derive(Debug)]
pub enum ServeError {
    Store(StoreError),
    Serve(service_kit::ServeError),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Store(e) => write!(f, "account store: {e}"),
            ServeError::Serve(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ServeError {}

impl From<service_kit::ServeError> for ServeError {
    fn from(e: service_kit::ServeError) -> Self {
        ServeError::Serve(e)
    }
}

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
            usize::try_from(args.quotes_max_in_flight).unwrap_or(usize::MAX),
        )
    });
    let app = Arc::new(App {
        store,
        served_by_field: routes::served_by_field(&netinfo::served_by()),
        forced_down: AtomicBool::new(false),
        metrics: Metrics::default(),
        quotes,
    });

    // One current-thread runtime per worker, each with its own listener:
    // see service_kit::serve_per_core for the measurement.
    service_kit::serve_per_core(workers, args.listen.addr(), args.drain.timeout(), |local| {
        println!("Starting HTTP service at {}", local.port());
        move |req| routes::handle(Arc::clone(&app), req)
    })?;
    Ok(())
}
