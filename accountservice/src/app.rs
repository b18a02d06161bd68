//! The state every request handler shares.

use std::sync::atomic::AtomicBool;

use crate::metrics::Metrics;
use crate::quote::QuoteClient;
use crate::store::Store;

pub struct App {
    pub store: Store,
    /// `,"servedBy":"<this instance's IPv4>"`, computed once at start-up and
    /// appended to every account document.
    pub served_by_field: Vec<u8>,
    /// Set through `/testability/healthy/false` to demo Swarm replacing an
    /// unhealthy container (blog part 6).
    pub forced_down: AtomicBool,
    pub metrics: Metrics,
    /// `None` when no `QUOTES_URL` is set: accounts carry no quote at all.
    pub quotes: Option<QuoteClient>,
}
