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

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
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
        /// The quote the answer carried, when it carried one.
        quote: Option<QuoteKind>,
    },
    /// No complete answer within the timeout of its due time.
    Timeout,
    /// No connection: refused, unreachable, or the handshake failed.
    Connect,
    /// The connection broke mid-request (reset, closed early).
    Reset,
}

/// Whether an answer's quote came from the quotes service or was the
/// accountservice's fallback (the blog's part 11: `"ipAddress":
/// "circuit-breaker"`), given when the call failed, was cut short by the
/// breaker, or was shed by its bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteKind {
    Live,
    Fallback,
}

/// Answers by the quote they carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Quotes {
    pub live: u64,
    pub fallback: u64,
}

impl Quotes {
    /// The fallback's share of the answers with a quote, in percent.
    pub fn fallback_percent(&self) -> Option<f64> {
        let total = self.live + self.fallback;
        (total > 0).then(|| 100.0 * self.fallback as f64 / total as f64)
    }
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
    pub quotes: Quotes,
    pub completed: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static bounds"),
            seconds: Vec::new(),
            failures: Failures::default(),
            served_by: BTreeMap::new(),
            quotes: Quotes::default(),
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
            Outcome::Answered {
                status,
                served_by,
                quote,
            } => {
                self.latency.saturating_record(micros);
                second.latency.saturating_record(micros);
                if let Some(replica) = served_by {
                    *self.served_by.entry(replica).or_default() += 1;
                }
                match quote {
                    Some(QuoteKind::Live) => self.quotes.live += 1,
                    Some(QuoteKind::Fallback) => self.quotes.fallback += 1,
                    None => {}
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
///
/// The load runs on threads of its own, one per core, each with a
/// single-threaded runtime and its share of the connections, as wrk's
/// threads have theirs: a connection's answer wakes the thread that
/// waits for it, never a scheduler that hands the work to another thread.
pub async fn run(plan: &Plan, target: &Target, recorder: Shared) -> Duration {
    let started = Instant::now();
    let (queue, jobs) = mpsc::unbounded_channel::<Job>();
    let load = Arc::new(Load {
        plan: plan.clone(),
        target: target.clone(),
        recorder,
        started,
        jobs: Arc::new(tokio::sync::Mutex::new(jobs)),
        feed: Feed::new(target.ids),
    });
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (stop, stopped) = watch::channel(false);
    let mut parts = Parts {
        stop,
        threads: Vec::new(),
    };
    let mut done = JoinSet::new();
    for index in 0..threads {
        let (finished, finishing) = oneshot::channel::<()>();
        let (load, queue, mut stopped) = (load.clone(), queue.clone(), stopped.clone());
        let thread = std::thread::Builder::new()
            .name(format!("bench-load-{index}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime starts");
                runtime.block_on(async {
                    tokio::select! {
                        () = part(load, queue, index, threads) => {}
                        _ = stopped.wait_for(|stop| *stop) => {}
                    }
                });
                // Dropping the runtime drops the connections still open,
                // which hand in what they recorded.
                drop(runtime);
                let _ = finished.send(());
            })
            .expect("the load threads start");
        parts.threads.push(thread);
        done.spawn(finishing);
    }
    drop(queue);
    while done.join_next().await.is_some() {}
    started.elapsed()
}

/// What every load thread reads.
struct Load {
    plan: Plan,
    target: Target,
    recorder: Shared,
    started: Instant,
    jobs: Queue,
    feed: Feed,
}

/// The load threads; dropping this (an interrupted run) stops them and
/// waits until their connections have handed in what they recorded, so
/// the report of a Ctrl-C has every answer that came in.
struct Parts {
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Parts {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Thread `index` of `threads`: its share of the users or connections,
/// and on the first thread the scheduler of a fixed rate.
async fn part(load: Arc<Load>, queue: mpsc::UnboundedSender<Job>, index: usize, threads: usize) {
    let (plan, started) = (&load.plan, load.started);
    let address = load.target.address;
    let end = started + plan.duration;
    let client = || Client::new(address, plan.timeout, started, load.recorder.clone());
    let own_connections =
        matches!(plan.model, Model::Users { users, .. } if plan.connections >= users as usize);
    let mine = |i: usize| i % threads == index;

    // JoinSets abort their tasks when dropped, so an interrupted run leaves
    // nothing sending behind it.
    let mut connections = JoinSet::new();
    if !own_connections {
        for _ in (0..plan.connections.max(1)).filter(|&i| mine(i)) {
            connections.spawn(connection(load.jobs.clone(), client()));
        }
    }
    let mut senders = JoinSet::new();
    match plan.model {
        Model::Rate { rate } if index == 0 => {
            let total = plan.model.scheduled(plan.duration).unwrap_or(0);
            let (queue, load) = (queue.clone(), load.clone());
            senders.spawn(async move {
                for k in 0..total {
                    let due = started + Model::due(rate, k);
                    tokio::time::sleep_until(due).await;
                    let path = fill(&load.target.path, load.feed.next());
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
        Model::Rate { .. } => {}
        Model::Users { users, pause, ramp } => {
            for i in (0..users).filter(|&i| mine(i as usize)) {
                let via = if own_connections {
                    Via::Own(Box::new(client()))
                } else {
                    Via::Pool(queue.clone())
                };
                let first = started + Model::user_start(i, users, ramp);
                senders.spawn(virtual_user(first, end, pause, via, load.clone()));
            }
        }
    }
    drop(queue);
    while senders.join_next().await.is_some() {}
    while connections.join_next().await.is_some() {}
}

/// The blog's Gatling user: request, wait for the answer, pause, again.
async fn virtual_user(
    first: Instant,
    end: Instant,
    pause: Duration,
    mut via: Via,
    load: Arc<Load>,
) {
    let mut due = first;
    while due < end {
        if due > Instant::now() {
            if let Via::Own(client) = &mut via {
                // About to idle: the live line should not wait for it.
                client.flush();
            }
            tokio::time::sleep_until(due).await;
            // Tokio wakes a sleeper on its next millisecond tick, up to a
            // millisecond after the deadline: the generator's lateness, not
            // the lab's. The user's request is due when the user wakes (it
            // still counts any wait for a pooled connection), as Gatling
            // counts from its send. The open-loop schedule keeps its fixed
            // times: there, a late send is what the latency must show.
            due = Instant::now();
        }
        // No sleep at all when it is due already: tokio rounds a deadline
        // up to its next millisecond tick, so `sleep_until(now)` waits up
        // to a millisecond, which in a closed loop was most of each request.
        let path = fill(&load.target.path, load.feed.next());
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
    Own(Box<Client>),
    Pool(mpsc::UnboundedSender<Job>),
}

/// How often a connection hands its outcomes to the shared recorder: often
/// enough for the live line, seldom enough that connections do not queue
/// on its lock once per request.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// One keep-alive connection, and where its outcomes go.
///
/// HTTP/1.1 by hand (httparse for the heads) rather than hyper's client:
/// hyper drives each connection from a task of its own and hands every
/// request and answer across a channel, which on this machine cost more
/// CPU than the service spent answering. Here the task that sends also
/// reads, into buffers kept for the connection's life.
struct Client {
    stream: Option<TcpStream>,
    address: SocketAddr,
    /// What follows the path in every request, built once.
    head: Box<[u8]>,
    request: Vec<u8>,
    response: Vec<u8>,
    timeout: Duration,
    started: Instant,
    recorder: Shared,
    /// Outcomes not yet in `recorder`: (due since start, latency, outcome).
    pending: Vec<(Duration, Duration, Outcome)>,
    flushed: Instant,
}

impl Client {
    fn new(address: SocketAddr, timeout: Duration, started: Instant, recorder: Shared) -> Self {
        let head = format!(" HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\n\r\n");
        Client {
            stream: None,
            address,
            head: head.into_bytes().into(),
            request: Vec::with_capacity(256),
            response: Vec::with_capacity(RESPONSE_CHUNK),
            timeout,
            started,
            recorder,
            pending: Vec::new(),
            flushed: Instant::now(),
        }
    }

    /// Sends one request due at `due` and records how it ended; opens a
    /// new connection after any failure.
    async fn send(&mut self, due: Instant, path: &str) {
        let outcome = tokio::time::timeout_at(due + self.timeout, self.exchange(path))
            .await
            .unwrap_or(Outcome::Timeout);
        if !matches!(outcome, Outcome::Answered { .. }) {
            // Half a request may still be on it.
            self.stream = None;
        }
        let now = Instant::now();
        self.pending.push((due - self.started, now - due, outcome));
        if now >= self.flushed + FLUSH_EVERY {
            self.flush();
        }
    }

    /// Hands the outcomes kept so far to the shared recorder.
    fn flush(&mut self) {
        self.flushed = Instant::now();
        if self.pending.is_empty() {
            return;
        }
        let mut recorder = self.recorder.lock().expect("no panics while recording");
        for (due, latency, outcome) in self.pending.drain(..) {
            recorder.record(due, latency, outcome);
        }
    }

    async fn exchange(&mut self, path: &str) -> Outcome {
        // A kept-alive connection the server has closed since is reopened,
        // not counted as a failure: a browser does the same.
        if self
            .stream
            .as_ref()
            .is_some_and(|open| !idle_and_open(open))
        {
            self.stream = None;
        }
        let stream = match &mut self.stream {
            Some(open) => open,
            None => {
                let Ok(opened) = TcpStream::connect(self.address).await else {
                    return Outcome::Connect;
                };
                let _ = opened.set_nodelay(true);
                self.stream.insert(opened)
            }
        };
        self.request.clear();
        self.request.extend_from_slice(b"GET ");
        self.request.extend_from_slice(path.as_bytes());
        self.request.extend_from_slice(&self.head);
        if stream.write_all(&self.request).await.is_err() {
            return Outcome::Reset;
        }
        self.response.clear();
        let mut eof = false;
        loop {
            match parse_response(&self.response, eof) {
                Parsed::Partial if !eof => {}
                Parsed::Partial | Parsed::Invalid => return Outcome::Reset,
                Parsed::Complete(answer) => {
                    if !answer.keep_alive {
                        self.stream = None;
                    }
                    return Outcome::Answered {
                        status: answer.status,
                        served_by: answer.served_by,
                        quote: answer.quote,
                    };
                }
            }
            if self.response.capacity() - self.response.len() < RESPONSE_CHUNK / 2 {
                self.response.reserve(RESPONSE_CHUNK);
            }
            match stream.read_buf(&mut self.response).await {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(_) => return Outcome::Reset,
            }
        }
    }
}

impl Drop for Client {
    /// An interrupted run (Ctrl-C) still reports what this connection saw.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Room read for at a time; an accountservice answer fits in one.
const RESPONSE_CHUNK: usize = 8192;

/// An idle kept-alive connection has nothing to read; end of stream or
/// an error means the server closed it. Never waits.
fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
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

/// What has been read of an answer so far.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Not all of it yet.
    Partial,
    /// Not HTTP/1.x, or a framing no server should send.
    Invalid,
    Complete(Answer),
}

#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    served_by: Option<String>,
    quote: Option<QuoteKind>,
    /// The connection can carry the next request.
    keep_alive: bool,
}

/// Parses the answer in `buf`; `eof` says the server has closed, which
/// ends a body that has neither a length nor chunks.
fn parse_response(buf: &[u8], eof: bool) -> Parsed {
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&buf[at..]) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Invalid,
        };
        let status = response.code.unwrap_or(0);
        let start = at + head;
        // 100 Continue and its kind come before the answer itself.
        if (100..200).contains(&status) && status != 101 {
            at = start;
            continue;
        }
        let mut length = None;
        let mut chunked = false;
        let mut close = response.version == Some(0);
        for header in response.headers.iter() {
            let value = header.value;
            if header.name.eq_ignore_ascii_case("content-length") {
                let parsed = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
                match (parsed, length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => return Parsed::Invalid,
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = has_token(value, b"chunked");
            } else if header.name.eq_ignore_ascii_case("connection") {
                if has_token(value, b"close") {
                    close = true;
                } else if has_token(value, b"keep-alive") {
                    close = false;
                }
            }
        }
        let ok = (200..300).contains(&status);
        let read = |body: &[u8]| {
            if ok {
                (served_by(body), quote_kind(body))
            } else {
                (None, None)
            }
        };
        let (end, (served, quote)) = if status == 204 || status == 304 {
            (start, (None, None))
        } else if chunked {
            match dechunk(&buf[start..]) {
                Dechunked::Partial => return Parsed::Partial,
                Dechunked::Invalid => return Parsed::Invalid,
                Dechunked::Complete { len, body } => (start + len, read(&body)),
            }
        } else if let Some(length) = length {
            if buf.len() < start + length {
                return Parsed::Partial;
            }
            (start + length, read(&buf[start..start + length]))
        } else if eof {
            close = true;
            (buf.len(), read(&buf[start..]))
        } else {
            return Parsed::Partial;
        };
        return Parsed::Complete(Answer {
            status,
            served_by: served,
            quote,
            // Bytes after the answer were never asked for.
            keep_alive: !close && !eof && end == buf.len(),
        });
    }
}

enum Dechunked {
    Partial,
    Invalid,
    Complete { len: usize, body: Vec<u8> },
}

/// A chunked body from its start: how long it is on the wire and its data.
fn dechunk(buf: &[u8]) -> Dechunked {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let (line, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Dechunked::Partial,
            Err(_) => return Dechunked::Invalid,
        };
        at += line;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let mut trailers = [httparse::EMPTY_HEADER; 16];
            return match httparse::parse_headers(&buf[at..], &mut trailers) {
                Ok(httparse::Status::Complete((len, _))) => Dechunked::Complete {
                    len: at + len,
                    body,
                },
                Ok(httparse::Status::Partial) => Dechunked::Partial,
                Err(_) => Dechunked::Invalid,
            };
        }
        let Ok(size) = usize::try_from(size) else {
            return Dechunked::Invalid;
        };
        let Some(data_end) = at.checked_add(size) else {
            return Dechunked::Invalid;
        };
        if buf.len() < data_end + 2 {
            return Dechunked::Partial;
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Dechunked::Invalid;
        }
        body.extend_from_slice(&buf[at..data_end]);
        at = data_end + 2;
    }
}

/// Whether a comma-separated header value holds `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

/// The quote an accountservice answer carried (part 7), if any: the
/// fallback names `circuit-breaker` as its address. Byte searches, as for
/// `servedBy`: the service writes these members itself with serde_json,
/// which puts no space after a colon.
pub fn quote_kind(body: &[u8]) -> Option<QuoteKind> {
    fn has(body: &[u8], needle: &[u8]) -> bool {
        body.windows(needle.len()).any(|w| w == needle)
    }
    if !has(body, b"\"quote\":{") {
        return None;
    }
    Some(if has(body, b"\"ipAddress\":\"circuit-breaker\"") {
        QuoteKind::Fallback
    } else {
        QuoteKind::Live
    })
}

/// The accountservice's `servedBy`: which replica answered. A byte search,
/// not a JSON parse: the service writes the member itself, unescaped, and
/// this runs once per answer.
pub fn served_by(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"servedBy\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = body[at..].trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] == b'\\' {
        return None;
    }
    String::from_utf8(rest[..end].to_vec()).ok()
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
            quote: Some(QuoteKind::Live),
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
                quote: None,
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
        assert_eq!(
            served_by(br#"{"servedBy" : "10.0.1.8"}"#).as_deref(),
            Some("10.0.1.8")
        );
        // Escapes are not the service's; better no replica than a wrong one.
        assert_eq!(served_by(br#"{"servedBy":"10.0.\"1"}"#), None);
    }

    #[test]
    fn an_answers_quote_is_live_the_fallback_or_absent() {
        let live = br#"{"id":"10000","name":"Person_0","servedBy":"10.0.1.5","quote":{"quote":"Hi","ipAddress":"quotes-1/10.0.1.9:8080","language":"en"}}"#;
        let fallback = br#"{"id":"10000","name":"Person_0","servedBy":"10.0.1.5","quote":{"quote":"May the source be with you, always.","ipAddress":"circuit-breaker","language":"en"}}"#;
        let part5 = br#"{"id":"10000","name":"Person_0","servedBy":"10.0.1.5"}"#;
        assert_eq!(quote_kind(live), Some(QuoteKind::Live));
        assert_eq!(quote_kind(fallback), Some(QuoteKind::Fallback));
        assert_eq!(quote_kind(part5), None);
        let quotes = Quotes {
            live: 1,
            fallback: 3,
        };
        assert_eq!(quotes.fallback_percent(), Some(75.0));
        assert_eq!(Quotes::default().fallback_percent(), None);
    }

    fn answer(status: u16, served_by: Option<&str>, keep_alive: bool) -> Parsed {
        Parsed::Complete(Answer {
            status,
            served_by: served_by.map(String::from),
            quote: None,
            keep_alive,
        })
    }

    /// Parses `full` after checking that every part of it a read could
    /// stop at is only partial.
    fn whole(full: &[u8]) -> Parsed {
        for cut in 0..full.len() {
            assert_eq!(
                parse_response(&full[..cut], false),
                Parsed::Partial,
                "{cut}"
            );
        }
        parse_response(full, false)
    }

    #[test]
    fn a_sized_answer_is_complete_once_its_body_is_in() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{\"servedBy\":\"10.0.1.5\"}";
        assert_eq!(whole(full), answer(200, Some("10.0.1.5"), true));
        let mut extra = full.to_vec();
        extra.extend_from_slice(b"HTTP/1.1");
        assert_eq!(
            parse_response(&extra, false),
            answer(200, Some("10.0.1.5"), false)
        );
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection() {
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno";
        assert_eq!(parse_response(close, false), answer(503, None, false));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(old, false), answer(200, None, false));
        let kept = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(kept, false), answer(200, None, true));
    }

    #[test]
    fn a_chunked_answer_is_joined_across_chunks() {
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"serve\r\n10\r\ndBy\":\"10.0.1.9\"}\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(whole(full), answer(200, Some("10.0.1.9"), true));
        let broken = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n";
        assert_eq!(parse_response(broken, false), Parsed::Invalid);
    }

    #[test]
    fn a_body_without_length_ends_with_the_connection() {
        let head = b"HTTP/1.1 200 OK\r\n\r\n{\"servedBy\":\"10.0.1.5\"}";
        assert_eq!(parse_response(head, false), Parsed::Partial);
        assert_eq!(
            parse_response(head, true),
            answer(200, Some("10.0.1.5"), false)
        );
        // ...except where there is none to wait for.
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(empty, false), answer(204, None, true));
    }

    #[test]
    fn an_interim_answer_is_skipped_and_garbage_is_invalid() {
        let interim =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(interim, false), answer(404, None, true));
        assert_eq!(
            parse_response(b"SSH-2.0-OpenSSH\r\n", false),
            Parsed::Invalid
        );
        let twice = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse_response(twice, false), Parsed::Invalid);
    }
}
