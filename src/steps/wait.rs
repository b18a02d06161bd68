//! The last step of `create`: the lab is up when Swarm runs every replica
//! and the service answers through `$ManagerIP`, the way the tutorial will
//! call it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::error::{Context, Error, Result};
use crate::http::HttpClient;
use crate::steps::deploy::Pace;
use crate::steps::images::template_image;
use crate::ui::Ui;

/// Swarm's own "try again": the manager's gRPC deadline ran out, or it has
/// no leader for a moment.
pub(crate) fn manager_too_busy(err: &bollard::errors::Error) -> bool {
    let message = crate::error::docker_message(err);
    message.contains("DeadlineExceeded") || message.contains("code = Unavailable")
}

/// The Swarm's nodes that are down, by id; none when the list cannot be
/// had (the wait goes on with what the tasks say).
async fn down_nodes(docker: &Docker) -> std::collections::HashSet<String> {
    use bollard::models::NodeState;
    docker
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::DOWN))
        .filter_map(|n| n.id)
        .collect()
}

/// Waits until Swarm runs exactly `replicas` tasks of `service`, each past
/// its health check (and, given `image`, on that image), and the tasks it
/// is stopping (after a scale down or an update) are gone. On timeout, or
/// when Swarm gives up on an update and rolls it back, says what the tasks
/// report. Returns when all wanted replicas first ran, before the stopping
/// tasks were gone: from then on only the new tasks get traffic.
pub async fn until_converged(
    docker: &Docker,
    ui: &Ui,
    service: &str,
    replicas: u64,
    image: Option<&str>,
    timeout: Duration,
) -> Result<Instant> {
    use bollard::models::{ServiceUpdateStatusStateEnum as Update, Task, TaskState};
    use bollard::query_parameters::ListTasksOptions;
    // Its own loop, not `retry::until_deadline`: each pass carries what
    // the last one saw (for the progress lines) and when every wanted
    // replica first ran, and its timeout reads the tasks' last error.
    let deadline = Instant::now() + timeout;
    let filters = HashMap::from([("service".to_string(), vec![service.to_string()])]);
    let mut last = (u64::MAX, u64::MAX);
    let mut all_wanted_running: Option<Instant> = None;
    loop {
        let listed = docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters.clone()),
            }))
            .await;
        let tasks = match listed {
            // A manager too busy to answer from its Raft store in time (two
            // emulated VMs on two busy cores did, once in four suite runs)
            // is asked again until the step's own deadline.
            Err(err) if manager_too_busy(&err) && Instant::now() < deadline => {
                ui.detail(format!(
                    "{service}: the manager answered late ({}); asking again",
                    crate::error::docker_message(&err)
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            listed => listed.with_context(|| format!("listing the tasks of {service}"))?,
        };
        // A node that is down (killed, with the lab's other managers
        // keeping the Swarm) still reports its tasks as running: they are
        // not, and an update must not wait for them to stop.
        let down = down_nodes(docker).await;
        let is_running = |t: &&Task| {
            t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
                && !t.node_id.as_ref().is_some_and(|n| down.contains(n))
        };
        let on_image = |t: &&Task| match image {
            None => true,
            Some(image) => template_image(t.spec.as_ref()) == Some(image),
        };
        let running = tasks.iter().filter(is_running).count() as u64;
        let wanted_running = tasks
            .iter()
            .filter(|t| t.desired_state == Some(TaskState::RUNNING))
            .filter(is_running)
            .filter(on_image)
            .count() as u64;
        if (running, wanted_running) != last {
            ui.detail(format!(
                "{service}: {wanted_running}/{replicas} running ({running} in all)"
            ));
            last = (running, wanted_running);
        }
        if wanted_running == replicas {
            let since = *all_wanted_running.get_or_insert_with(Instant::now);
            if running == replicas {
                return Ok(since);
            }
        }
        let why = || {
            tasks
                .iter()
                .filter_map(|t| t.status.as_ref())
                .find_map(|s| s.err.clone().filter(|e| !e.is_empty()))
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        };
        if image.is_some() {
            let update = docker
                .inspect_service(service, None)
                .await
                .with_context(|| format!("reading service {service}"))?
                .update_status;
            let state = update.as_ref().and_then(|u| u.state);
            if matches!(
                state,
                Some(
                    Update::ROLLBACK_STARTED
                        | Update::ROLLBACK_COMPLETED
                        | Update::ROLLBACK_PAUSED
                        | Update::PAUSED
                )
            ) {
                let message = update.and_then(|u| u.message).unwrap_or_default();
                return Err(Error::UpdateStopped {
                    service: service.to_string(),
                    message,
                    why: why(),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(Error::ReplicasNotRunning {
                service: service.to_string(),
                running: wanted_running,
                replicas,
                seconds: timeout.as_secs(),
                why: why(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the probe saw.
#[derive(Debug, Default, Clone)]
pub struct Answer {
    /// Distinct `servedBy` values in the JSON answers: one per replica reached.
    pub served_by: BTreeSet<String>,
}

/// How long every replica has, after the first answer, to answer too. The
/// last replica of a lab usually answers within 2 s of the first (1.8 s for
/// the third of three on emulated VMs here, `create --driver qemu -v`), but a
/// CI machine's emulated lab once saw one replica in 3 s: IPVS learns the
/// tasks of other nodes over the overlay's gossip, which emulation slows.
/// The window ends as soon as every replica answered, so it only costs time
/// when a replica is late, and then the user hears of it.
const EVERY_REPLICA: Duration = Duration::from_secs(10);

/// How long the service has to answer at all, on native machines.
const FIRST_ANSWER: Duration = Duration::from_secs(120);

/// Calls `url` until it answers 200, then until every replica answered
/// (`replicas` distinct `servedBy`) or [`EVERY_REPLICA`] passed, so the
/// tutorial's first curls already go round every replica. Both waits are
/// stretched by `pace`. A replica that stays silent is a warning, not an
/// error: the service answers.
pub async fn until_answers(ui: &Ui, url: &str, replicas: u64, pace: Pace) -> Result<Answer> {
    let patience = Patience {
        first_answer: pace.patience(FIRST_ANSWER),
        every_replica: pace.patience(EVERY_REPLICA),
    };
    probe(ui, url, replicas, patience).await
}

/// The two waits of [`until_answers`], apart so tests can shorten them.
#[derive(Debug, Clone, Copy)]
struct Patience {
    first_answer: Duration,
    every_replica: Duration,
}

async fn probe(ui: &Ui, url: &str, replicas: u64, patience: Patience) -> Result<Answer> {
    let Patience {
        first_answer,
        every_replica,
    } = patience;
    // Its own loop, not `retry::until_deadline`: two windows (the first
    // answer's, then every replica's after it) and the replicas seen so far.
    let http = HttpClient::new();
    let deadline = Instant::now() + first_answer;
    let mut answer = Answer::default();
    let mut first_success: Option<Instant> = None;
    let mut last = String::from("no answer yet");
    loop {
        match http.get(url, Duration::from_secs(3)).await {
            Ok(response) if response.status == 200 => {
                first_success.get_or_insert_with(Instant::now);
                if let Some(ip) = served_by(&response.body) {
                    if answer.served_by.insert(ip.clone()) {
                        ui.detail(format!("answered from {ip}"));
                    }
                }
            }
            Ok(response) => note(ui, &mut last, format!("HTTP {}", response.status)),
            Err(err) => note(ui, &mut last, err),
        }
        if let Some(first) = first_success {
            let seen = answer.served_by.len() as u64;
            if seen >= replicas {
                return Ok(answer);
            }
            if first.elapsed() > every_replica {
                ui.warn(format!(
                    "{url}: {seen} of {replicas} replicas answered in {}s after the first \
                     answer; the others may still be starting (see `docker service ps`)",
                    every_replica.as_secs()
                ));
                return Ok(answer);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        }
        if Instant::now() > deadline {
            return Err(Error::NoAnswer {
                url: url.to_string(),
                seconds: first_answer.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shows each change of what the probe gets (`--verbose`).
fn note(ui: &Ui, last: &mut String, now: String) {
    if *last != now {
        ui.detail(&now);
        *last = now;
    }
}

fn served_by(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(value.get("servedBy")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_manager_is_asked_again_and_other_errors_are_not() {
        let server = |message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: message.to_string(),
        };
        assert!(manager_too_busy(&server(
            "rpc error: code = DeadlineExceeded desc = context deadline exceeded"
        )));
        assert!(manager_too_busy(&server(
            "rpc error: code = Unavailable desc = the raft has no leader"
        )));
        assert!(!manager_too_busy(&server(
            "service accountservice not found"
        )));
    }

    #[test]
    fn reads_served_by_from_the_account_json() {
        let body = br#"{"id":"10000","name":"Person_0","servedBy":"10.0.1.7"}"#;
        assert_eq!(served_by(body).as_deref(), Some("10.0.1.7"));
        assert_eq!(served_by(b"not json"), None);
        assert_eq!(served_by(br#"{"id":"1"}"#), None);
    }

    /// A loopback HTTP server whose answers are `servedBy` the addresses
    /// in turn, one connection per request, as the routing mesh spreads them.
    async fn replicas_answering(addresses: &'static [&'static str]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/accounts/10000", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for address in addresses.iter().cycle() {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let body = format!(r#"{{"id":"10000","servedBy":"{address}"}}"#);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        url
    }

    fn patience(every_replica: Duration) -> Patience {
        Patience {
            first_answer: Duration::from_secs(5),
            every_replica,
        }
    }

    #[tokio::test]
    async fn returns_once_every_replica_answered() {
        let url = replicas_answering(&["10.0.1.3", "10.0.1.4", "10.0.1.5"]).await;
        // A window far longer than the test may take: only seeing all
        // three replicas ends the probe in time.
        let ui = Ui::new(true, false);
        let probing = probe(&ui, &url, 3, patience(Duration::from_secs(600)));
        let answer = tokio::time::timeout(Duration::from_secs(60), probing)
            .await
            .expect("the probe waited on after every replica answered")
            .unwrap();
        let seen: Vec<_> = answer.served_by.into_iter().collect();
        assert_eq!(seen, ["10.0.1.3", "10.0.1.4", "10.0.1.5"]);
    }

    #[tokio::test]
    async fn a_silent_replica_ends_the_window_with_what_answered() {
        let url = replicas_answering(&["10.0.1.3"]).await;
        let answer = probe(
            &Ui::new(true, false),
            &url,
            3,
            patience(Duration::from_millis(300)),
        )
        .await
        .unwrap();
        let seen: Vec<_> = answer.served_by.into_iter().collect();
        assert_eq!(seen, ["10.0.1.3"]);
    }

    #[tokio::test]
    async fn no_answer_at_all_is_an_error_naming_the_url() {
        // A port that was free a moment ago: connections are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/accounts/10000");
        let quick = Patience {
            first_answer: Duration::from_millis(300),
            every_replica: Duration::from_millis(300),
        };
        let err = probe(&Ui::new(true, false), &url, 3, quick)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoAnswer { .. }), "{err}");
        assert!(err.to_string().starts_with(&url), "{err}");
    }
}
