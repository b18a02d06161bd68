//! Start-up: the runtime, the shared state and the start-up line. The accept
//! loop and graceful shutdown are `service_kit::serve`'s, shared with the
//! accountservice: on SIGTERM (Swarm stopping a task) or SIGINT the listener
//! closes, in-flight requests finish and the process exits 0.

use std::sync::Arc;

use service_kit::{netinfo, ServeError};

use crate::cli::ServeArgs;
use crate::quotes::Quotes;
use crate::routes::{self, App};

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
    runtime.block_on(service_kit::serve(
        args.listen.addr(),
        args.drain.timeout(),
        |local| {
            // The answer names the instance and port it came from (blog
            // part 7), so the app needs the port the kernel gave.
            let app = Arc::new(App {
                quotes: Quotes::default(),
                ip_address: format!("{}:{}", netinfo::served_by(), local.port()),
            });
            eprintln!(
                "quotes-service listening on {}:{}, answering as {}",
                local.ip(),
                local.port(),
                app.ip_address
            );
            move |req| routes::handle(Arc::clone(&app), req)
        },
    ))
}
