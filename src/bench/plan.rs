//! What a load test sends and when: the arrival schedule of either load
//! model, the circular id feed and the path template. Pure, so the numbers
//! a test asserts on (how many requests a run schedules) follow from the
//! arguments alone, not from how fast the machine was.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Longest run `bench` accepts: every run stops by itself, and its
/// per-second timeline stays small.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Highest open-loop rate and most virtual users: far beyond what a lab on
/// a laptop answers, low enough that a typo cannot queue millions of requests.
pub const MAX_RATE: f64 = 100_000.0;
pub const MAX_USERS: u32 = 100_000;

/// How requests arrive.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Model {
    /// The blog's Gatling scenario: each user starts within the ramp, then
    /// requests, waits for the answer, pauses, and requests again.
    Users {
        users: u32,
        #[serde(rename = "pause_s", serialize_with = "seconds")]
        pause: Duration,
        #[serde(rename = "ramp_s", serialize_with = "seconds")]
        ramp: Duration,
    },
    /// A fixed arrival rate that does not slow down when the server does.
    Rate { rate: f64 },
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Model {
    /// How many requests an open-loop run schedules: exactly one every
    /// 1/rate seconds from 0, strictly before `duration`.
    pub fn scheduled(&self, duration: Duration) -> Option<u64> {
        match self {
            Model::Rate { rate } => {
                // 200 × 5 s is 1000 requests, at 0 .. 4.995 s; the one at
                // 5 s would start after the run. The epsilon keeps 0.1 × 30
                // (3.0000000000000004 in floating point) at 3.
                let exact = rate * duration.as_secs_f64();
                Some((exact - 1e-9).ceil().max(0.0) as u64)
            }
            Model::Users { .. } => None,
        }
    }

    /// When the open-loop request `k` is due, from the start.
    pub fn due(rate: f64, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / rate)
    }

    /// When user `i` of `users` sends its first request: evenly over the ramp.
    pub fn user_start(i: u32, users: u32, ramp: Duration) -> Duration {
        if users == 0 {
            return Duration::ZERO;
        }
        ramp.mul_f64(f64::from(i) / f64::from(users))
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Model::Users { users, pause, ramp } => write!(
                f,
                "{users} users, {} pause, {} ramp",
                humantime::format_duration(*pause),
                humantime::format_duration(*ramp)
            ),
            Model::Rate { rate } => write!(f, "open loop at {rate} req/s"),
        }
    }
}

/// `--ids A..B`: account ids A to B inclusive, handed out in turn and
/// round again, like Gatling's circular feeder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdRange {
    pub first: u64,
    pub last: u64,
}

impl IdRange {
    pub fn nth(&self, k: u64) -> u64 {
        self.first + k % (self.last - self.first + 1)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.first, self.last)
    }
}

/// clap's parser for `--ids`.
pub fn parse_ids(text: &str) -> Result<IdRange, String> {
    let (first, last) = text
        .split_once("..")
        .ok_or_else(|| format!("expected FIRST..LAST, e.g. 10000..10099, not {text:?}"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not an account id (a whole number)"))
    };
    let (first, last) = (number(first)?, number(last.trim_start_matches('='))?);
    if first > last {
        return Err(format!(
            "the range {first}..{last} runs backwards: write {last}..{first}"
        ));
    }
    Ok(IdRange { first, last })
}

/// The shared feed: each request takes the next id, whichever user sends it.
#[derive(Debug)]
pub struct Feed {
    ids: IdRange,
    next: AtomicU64,
}

impl Feed {
    pub fn new(ids: IdRange) -> Self {
        Feed {
            ids,
            next: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> u64 {
        self.ids.nth(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// clap's parser for `--path`: an absolute path, `{id}` where the id goes.
pub fn parse_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "{text:?} must start with '/', e.g. /accounts/{{id}}"
        ));
    }
    fill(text, 0)
        .parse::<hyper::http::uri::PathAndQuery>()
        .map_err(|_| format!("{text:?} is not a valid URL path"))?;
    Ok(text.to_string())
}

/// The path with `{id}` replaced.
pub fn fill(template: &str, id: u64) -> String {
    template.replace("{id}", &id.to_string())
}

/// clap's parser for `--duration`, `--pause`, `--ramp`: `30s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|_| format!("{text:?} is not a duration: write it like 30s, 500ms or 2m"))?;
    if duration > MAX_DURATION {
        return Err(format!("{text} is longer than the hour a bench may run"));
    }
    Ok(duration)
}

/// `--duration` also has to be more than nothing.
pub fn parse_run_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("the run must last more than 0s, e.g. 30s".into());
    }
    Ok(duration)
}

/// clap's parser for `--rate`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate in requests per second"))?;
    if !(rate > 0.0 && rate <= MAX_RATE) {
        return Err(format!(
            "the rate must be more than 0 and at most {MAX_RATE} requests per second, not {text}"
        ));
    }
    Ok(rate)
}

/// `NODE@T`, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillSpec {
    pub node: String,
    pub at: Duration,
}

/// clap's parser for `--kill`.
pub fn parse_kill(text: &str) -> Result<KillSpec, String> {
    let (node, at) = text
        .rsplit_once('@')
        .ok_or_else(|| format!("expected NODE@TIME, e.g. swarm-worker-1@10s, not {text:?}"))?;
    if node.is_empty() {
        return Err(format!(
            "{text:?} names no node: write it like swarm-worker-1@10s"
        ));
    }
    Ok(KillSpec {
        node: node.to_string(),
        at: parse_duration(at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_names_a_node_and_a_time() {
        assert_eq!(
            parse_kill("swarm-worker-1@10s"),
            Ok(KillSpec {
                node: "swarm-worker-1".into(),
                at: Duration::from_secs(10)
            })
        );
        assert!(parse_kill("@10s").unwrap_err().contains("names no node"));
        assert!(parse_kill("swarm-worker-1").is_err());
        assert!(parse_kill("swarm-worker-1@soon").is_err());
    }

    #[test]
    fn open_loop_schedules_rate_times_duration_exactly() {
        let rate = Model::Rate { rate: 200.0 };
        assert_eq!(rate.scheduled(Duration::from_secs(5)), Some(1000));
        assert_eq!(
            Model::Rate { rate: 3.0 }.scheduled(Duration::from_millis(1500)),
            Some(5)
        );
        assert_eq!(
            Model::Rate { rate: 0.1 }.scheduled(Duration::from_secs(30)),
            Some(3)
        );
        assert_eq!(Model::due(200.0, 1), Duration::from_millis(5));
        assert_eq!(Model::due(200.0, 999), Duration::from_millis(4995));
    }

    #[test]
    fn users_start_evenly_over_the_ramp() {
        let ramp = Duration::from_secs(10);
        assert_eq!(Model::user_start(0, 1000, ramp), Duration::ZERO);
        assert_eq!(Model::user_start(500, 1000, ramp), Duration::from_secs(5));
        assert!(Model::user_start(999, 1000, ramp) < ramp);
    }

    #[test]
    fn ids_are_inclusive_circular_and_never_backwards() {
        let ids = parse_ids("10000..10099").unwrap();
        assert_eq!(ids.nth(0), 10000);
        assert_eq!(ids.nth(99), 10099);
        assert_eq!(ids.nth(100), 10000);
        let feed = Feed::new(parse_ids("5..6").unwrap());
        let taken: Vec<u64> = (0..5).map(|_| feed.next()).collect();
        assert_eq!(taken, [5, 6, 5, 6, 5]);
        assert_eq!(parse_ids("7..7").unwrap().nth(3), 7);
        assert!(parse_ids("10099..10000").unwrap_err().contains("backwards"));
        assert!(parse_ids("10000").is_err());
        assert!(parse_ids("a..b").is_err());
    }

    #[test]
    fn durations_and_rates_refuse_what_makes_no_run() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_run_duration("0s").is_err());
        assert_eq!(parse_rate("200"), Ok(200.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-5").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("1e9").is_err());
    }

    #[test]
    fn paths_take_the_id_where_the_template_says() {
        assert_eq!(parse_path("/accounts/{id}").unwrap(), "/accounts/{id}");
        assert_eq!(fill("/accounts/{id}", 10042), "/accounts/10042");
        assert!(parse_path("accounts/{id}").is_err());
        assert!(parse_path("/a b").is_err());
    }
}
