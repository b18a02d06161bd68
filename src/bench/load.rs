//! The load generator: sends a [`Plan`] to one lab address over keep-alive
//! connections and records every outcome in a [`Recorder`].
//!
//! Requests are due at times the plan fixes; a connection takes the next
//! due request when it is free, as wrk2 does (virtual users with a
//! connection each send on it themselves, as Gatling's do). Latency is counted from when
//! a request was *due*, not when a connection got round to sending it, so a
//! server that stalls shows its stall in the percentiles instead of hiding
//! it by slowing the generator down (coordinated omission). The timeout
//! runs from the due time too: every request is settled by the end of the
//! run plus one timeout, so a run stops by itself however the server
//! behaves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, HOST};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::plan::{fill, Feed, IdRange, Model};

/// Slowest latency the histograms hold; anything slower is a timeout.
const HIGHEST_US: u64 = 3_600_000_000;

/// What to send, how hard and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    pub model: Model,
    pub duration: Duration,
    /// Keep-alive connections, each its own TCP connection and source port,
    /// so the routing mesh (per connection) and the edge (per request)
    /// both spread them over the replicas as they would real clients.
    pub connections: usize,
    pub timeout: Duration,
}

/// Where to send it: a lab address (never anything else; the command
/// takes it from the lab's state), a path template and the id feed.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub path: String,
    pub ids: IdRange,
}

impl Target {
    pub fn url(&self) -> String {
        format!("http://{}{}", self.address, self.path)
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer, whatever its status; `served_by` is the replica the
    /// accountservice named in a 2xx JSON body.
    Answered {
        status: u16,
        served_by: Option<String>,
    },
    /// No complete answer within the timeout of its due time.
    Timeout,
    /// No connection: refused, unreachable, or the handshake failed.
    Connect,
    /// The connection broke mid-request (reset, closed early).
    Reset,
}

/// Failures by kind, as the report lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Failures {
    pub total: u64,
    /// Answers outside 2xx, all statuses together...
    pub status: u64,
    /// ...and by status code.
    pub by_status: BTreeMap<u16, u64>,
    pub timeout: u64,
    pub connect: u64,
    pub reset: u64,
}

/// One second of the run, by due time.
#[derive(Debug, Clone)]
pub struct Second {
    pub requests: u64,
    pub failures: u64,
    /// Latency of the answered requests, in microseconds.
    pub latency: Histogram<u64>,
}

/// Everything recorded so far; shared between the connections, the live
/// progress line and the report.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latency of every answered request (any status), in microseconds.
    /// Timeouts, refused connections and resets have no latency to give.
    pub latency: Histogram<u64>,
    pub seconds: Vec<Second>,
    pub failures: Failures,
    pub served_by: BTreeMap<String, u64>,
    pub completed: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static bounds"),
            seconds: Vec::new(),
            failures: Failures::default(),
            served_by: BTreeMap::new(),
            completed: 0,
        }
    }
}

impl Recorder {
    /// Records a request due `due` into the run that ended as `outcome`
    /// `latency` after it was due.
    pub fn record(&mut self, due: Duration, latency: Duration, outcome: Outcome) {
        self.completed += 1;
        let index = due.as_secs() as usize;
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, || Second {
                requests: 0,
                failures: 0,
                // Two significant digits: a timeline of an hour stays small.
                latency: Histogram::new_with_bounds(1, HIGHEST_US, 2).expect("static bounds"),
            });
        }
        let second = &mut self.seconds[index];
        second.requests += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let failed = match outcome {
            Outcome::Answered { status, served_by } => {
                self.latency.saturating_record(micros);
                second.latency.saturating_record(micros);
                if let Some(replica) = served_by {
                    *self.served_by.entry(replica).or_default() += 1;
                }
                if (200..300).contains(&status) {
                    false
                } else {
                    self.failures.status += 1;
                    *self.failures.by_status.entry(status).or_default() += 1;
                    true
                }
            }
            Outcome::Timeout => {
                self.failures.timeout += 1;
                true
            }
            Outcome::Connect => {
                self.failures.connect += 1;
                true
            }
            Outcome::Reset => {
                self.failures.reset += 1;
                true
            }
        };
        if failed {
            self.failures.total += 1;
            second.failures += 1;
        }
    }
}

pub type Shared = Arc<Mutex<Recorder>>;

/// One request, due at a fixed time; a virtual user waits on `done`.
struct Job {
    due: Instant,
    path: String,
    done: Option<oneshot::Sender<()>>,
}

type Queue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>;

/// Runs the plan to its end and returns how long it took: the last
/// request is settled at most one timeout after the run's duration. Drop
/// the future (Ctrl-C) to stop at once; what was recorded stays.
pub async fn run(plan: &Plan, target: &Target, recorder: Shared) -> Duration {
    let started = Instant::now();
    let end = started + plan.duration;
    let (queue, jobs) = mpsc::unbounded_channel::<Job>();
    let jobs: Queue = Arc::new(tokio::sync::Mutex::new(jobs));
    let host: Arc<str> = target.address.to_string().into();
    let client = || Client {
        sender: None,
        address: target.address,
        host: host.clone(),
        timeout: plan.timeout,
        started,
        recorder: recorder.clone(),
    };
    let own_connections =
        matches!(plan.model, Model::Users { users, .. } if plan.connections >= users as usize);

    // JoinSets abort their tasks when dropped, so an interrupted run leaves
    // nothing sending behind it.
    let mut connections = JoinSet::new();
    if !own_connections {
        for _ in 0..plan.connections.max(1) {
            connections.spawn(connection(jobs.clone(), client()));
        }
    }
    let feed = Arc::new(Feed::new(target.ids));
    let mut senders = JoinSet::new();
    match plan.model {
        Model::Rate { rate } => {
            let total = plan.model.scheduled(plan.duration).unwrap_or(0);
            let (queue, feed, path) = (queue.clone(), feed.clone(), target.path.clone());
            senders.spawn(async move {
                for k in 0..total {
                    let due = started + Model::due(rate, k);
                    tokio::time::sleep_until(due).await;
                    let path = fill(&path, feed.next());
                    if queue
                        .send(Job {
                            due,
                            path,
                            done: None,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        Model::Users { users, pause, ramp } => {
            for i in 0..users {
                let via = if own_connections {
                    Via::Own(client())
                } else {
                    Via::Pool(queue.clone())
                };
                let (feed, path) = (feed.clone(), target.path.clone());
                let first = started + Model::user_start(i, users, ramp);
                senders.spawn(virtual_user(first, end, pause, via, feed, path));
            }
        }
    }
    drop(queue);
    while senders.join_next().await.is_some() {}
    while connections.join_next().await.is_some() {}
    started.elapsed()
}

/// The blog's Gatling user: request, wait for the answer, pause, again.
async fn virtual_user(
    first: Instant,
    end: Instant,
    pause: Duration,
    mut via: Via,
    feed: Arc<Feed>,
    path: String,
) {
    let mut due = first;
    while due < end {
        tokio::time::sleep_until(due).await;
        let path = fill(&path, feed.next());
        match &mut via {
            Via::Own(client) => client.send(due, &path).await,
            Via::Pool(queue) => {
                let (done, answered) = oneshot::channel();
                let job = Job {
                    due,
                    path,
                    done: Some(done),
                };
                if queue.send(job).is_err() {
                    return;
                }
                let _ = answered.await;
            }
        }
        due = Instant::now() + pause;
    }
}

/// How a virtual user sends: over a connection of its own, as Gatling's
/// users do (and with no hand-off, so a closed loop runs as fast as the
/// lab answers), or through the pool when there are fewer connections
/// than users.
enum Via {
    Own(Client),
    Pool(mpsc::UnboundedSender<Job>),
}

/// One keep-alive connection, and where its outcomes go.
struct Client {
    sender: Option<SendRequest<Empty<Bytes>>>,
    address: SocketAddr,
    host: Arc<str>,
    timeout: Duration,
    started: Instant,
    recorder: Shared,
}

impl Client {
    /// Sends one request due at `due` and records how it ended; opens a
    /// new connection after any failure.
    async fn send(&mut self, due: Instant, path: &str) {
        let outcome = tokio::time::timeout_at(
            due + self.timeout,
            exchange(&mut self.sender, self.address, &self.host, path),
        )
        .await
        .unwrap_or(Outcome::Timeout);
        if !matches!(outcome, Outcome::Answered { .. }) {
            // Half a request may still be on it.
            self.sender = None;
        }
        let latency = due.elapsed();
        self.recorder
            .lock()
            .expect("no panics while recording")
            .record(due - self.started, latency, outcome);
    }
}

/// A pooled connection: takes the next due request whoever scheduled it.
async fn connection(jobs: Queue, mut client: Client) {
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else { return };
        client.send(job.due, &job.path).await;
        if let Some(done) = job.done {
            let _ = done.send(());
        }
    }
}

async fn exchange(
    sender: &mut Option<SendRequest<Empty<Bytes>>>,
    address: SocketAddr,
    host: &str,
    path: &str,
) -> Outcome {
    // A kept-alive connection the server has closed since is reopened,
    // not counted as a failure: a browser does the same.
    let reusable = match sender.as_mut() {
        Some(open) => open.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        match open(address).await {
            Ok(opened) => *sender = Some(opened),
            Err(outcome) => return outcome,
        }
    }
    let Some(open) = sender.as_mut() else {
        return Outcome::Connect;
    };
    let request = hyper::Request::get(path)
        .header(HOST, host)
        .header(ACCEPT, "application/json")
        .body(Empty::new())
        .expect("the path was checked when parsed");
    let response = match open.send_request(request).await {
        Ok(response) => response,
        Err(err) => return broken(&err),
    };
    let status = response.status().as_u16();
    let body = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return broken(&err),
    };
    let served_by = if (200..300).contains(&status) {
        served_by(&body)
    } else {
        None
    };
    Outcome::Answered { status, served_by }
}

async fn open(address: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, Outcome> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|_| Outcome::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Outcome::Connect)?;
    // Ends when the sender is dropped or the peer closes.
    tokio::spawn(connection);
    Ok(sender)
}

fn broken(err: &hyper::Error) -> Outcome {
    if err.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Reset
    }
}

/// The accountservice's `servedBy`: which replica answered.
pub fn served_by(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "servedBy")]
        served_by: Option<String>,
    }
    serde_json::from_slice::<Answer>(body).ok()?.served_by
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn outcomes_land_in_their_kind_second_and_replica() {
        let mut recorder = Recorder::default();
        let ok = |ip: &str| Outcome::Answered {
            status: 200,
            served_by: Some(ip.into()),
        };
        recorder.record(ms(10), ms(2), ok("10.0.1.5"));
        recorder.record(ms(900), ms(4), ok("10.0.1.6"));
        recorder.record(ms(1200), ms(3), ok("10.0.1.5"));
        recorder.record(
            ms(1300),
            ms(1),
            Outcome::Answered {
                status: 500,
                served_by: None,
            },
        );
        recorder.record(ms(2100), ms(2000), Outcome::Timeout);
        recorder.record(ms(2200), ms(1), Outcome::Connect);
        recorder.record(ms(2300), ms(1), Outcome::Reset);

        assert_eq!(recorder.completed, 7);
        let f = &recorder.failures;
        assert_eq!(
            (f.total, f.status, f.timeout, f.connect, f.reset),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(f.by_status, BTreeMap::from([(500, 1)]));
        let per_second: Vec<(u64, u64)> = recorder
            .seconds
            .iter()
            .map(|s| (s.requests, s.failures))
            .collect();
        assert_eq!(per_second, [(2, 0), (2, 1), (3, 3)]);
        assert_eq!(recorder.served_by["10.0.1.5"], 2);
        assert_eq!(recorder.served_by["10.0.1.6"], 1);
        // Answered requests only: the timeout has no latency to give.
        assert_eq!(recorder.latency.len(), 4);
        assert!(recorder.latency.equivalent(recorder.latency.max(), 4000));
    }

    #[test]
    fn served_by_is_read_from_the_accountservice_answer() {
        let body =
            br#"{"id":"10000","name":"Person_0","servedBy":"10.0.1.7","quote":{"quote":"x"}}"#;
        assert_eq!(served_by(body).as_deref(), Some("10.0.1.7"));
        assert_eq!(served_by(br#"{"status":"UP"}"#), None);
        assert_eq!(served_by(b"not json"), None);
    }
}
