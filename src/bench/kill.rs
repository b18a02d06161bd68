//! `--kill NODE@T [--heal-after D]`: failover under load. A node is
//! stopped mid-run through the provider that made it (as a crash would
//! take it away) and, with `--heal-after`, started again, so the report can
//! show what the learner's clients saw while Swarm and the edge caught up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::lab::state::NodeState;
use crate::provider::Provider;

/// Something done to the lab during the run, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Seconds from the start of the run.
    pub at_s: f64,
    pub what: String,
}

pub type Events = Arc<Mutex<Vec<Event>>>;

/// Stops `node` at `at` into the run and starts it `heal_after` later.
/// Failures are events too: the load goes on either way.
pub async fn run(
    provider: Box<dyn Provider>,
    node: NodeState,
    at: Duration,
    heal_after: Option<Duration>,
    started: Instant,
    events: Events,
) {
    // Each event is dated when it began: the node's engine stops serving
    // as soon as the stop starts, not when the provider returns.
    let note = |began: Instant, what: String| {
        let took = began.elapsed().as_secs_f64();
        events.lock().expect("no panics while noting").push(Event {
            at_s: (began - started).as_secs_f64(),
            what: format!("{what} (took {took:.1}s)"),
        });
    };
    tokio::time::sleep_until(started + at).await;
    let began = Instant::now();
    match provider.stop(&node).await {
        Ok(()) => note(began, format!("killed {}", node.hostname)),
        Err(err) => {
            note(began, format!("could not kill {}: {err}", node.hostname));
            return;
        }
    }
    let Some(heal_after) = heal_after else { return };
    tokio::time::sleep_until(started + at + heal_after).await;
    let began = Instant::now();
    match provider.start(&node).await {
        Ok(address) if address == node.address => {
            note(began, format!("healed {}", node.hostname));
        }
        Ok(address) => note(
            began,
            format!(
                "healed {}, now on {address}: `goblog-lab start` gives its engine a certificate for it",
                node.hostname
            ),
        ),
        Err(err) => note(began, format!("could not heal {}: {err}", node.hostname)),
    }
}
