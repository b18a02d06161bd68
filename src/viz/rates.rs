//! Per-task request rates for `viz`, read from the edge proxy's statistics.
//!
//! HAProxy counts, per server slot, the requests it sent there, and each
//! `server-template` slot carries the address Docker's DNS gave it: a task's
//! address on the overlay. Two readings a second apart give each task's
//! requests per second without touching the tasks (a `docker exec` per task
//! per second would keep an idle lab busy); the manager's view of the
//! overlay says which task has which address.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use serde::Serialize;

use crate::http::HttpClient;
use crate::lab::state::{LabState, Publish, Routing};
use crate::steps::edge::{STATS_PATH, STATS_PORT};

/// A stats read that takes longer than this is dropped: the page would
/// rather show no rate than a late one.
const STATS_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether the page can show rates, and why not or from where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateStatus {
    pub available: bool,
    pub note: String,
}

/// One server slot of the stats: a task's address and its request count.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCount {
    pub backend: String,
    pub server: String,
    pub addr: IpAddr,
    pub total: u64,
    /// What the task's last passed health check said it lacks: the
    /// answer's `X-Degraded` (the edge's `on-success` text), if any.
    pub degraded: Option<String>,
}

/// The server rows of HAProxy's `/stats;csv` that have an address. The
/// count is `req_tot` where the proxy fills it for servers, else `stot`
/// (each HTTP request is a stream, counted there).
pub fn parse_stats_csv(text: &str) -> Result<Vec<ServerCount>, String> {
    // HAProxy's header line starts with "# ": the rest is ordinary CSV
    // (quoted where a field holds a comma or a quote, as a check's
    // description can), which the csv crate reads.
    let body = text
        .strip_prefix("# ")
        .ok_or("the stats have no '# pxname,...' header")?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(body.as_bytes());
    let columns = reader
        .headers()
        .map_err(|err| format!("the stats' header: {err}"))?
        .clone();
    let column = |name: &str| columns.iter().position(|c| c == name);
    let (Some(pxname), Some(svname), Some(stot), Some(addr)) = (
        column("pxname"),
        column("svname"),
        column("stot"),
        column("addr"),
    ) else {
        return Err("the stats lack pxname, svname, stot or addr".into());
    };
    let req_tot = column("req_tot");
    let (last_chk, check_status) = (column("last_chk"), column("check_status"));
    let mut found = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|err| format!("the stats: {err}"))?;
        let field = |i: usize| record.get(i).unwrap_or("");
        let server = field(svname);
        if server == "FRONTEND" || server == "BACKEND" {
            continue;
        }
        // A slot DNS has not filled has no address, and no task to show.
        let Ok(socket) = field(addr).parse::<SocketAddr>() else {
            continue;
        };
        let total = req_tot
            .map(field)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| field(stot));
        let Ok(total) = total.parse() else {
            continue;
        };
        found.push(ServerCount {
            backend: field(pxname).to_string(),
            server: server.to_string(),
            addr: socket.ip(),
            total,
            degraded: last_chk
                .map(field)
                .filter(|text| !text.trim().is_empty())
                .filter(|_| check_status.map(field) == Some("L7OK"))
                .map(|text| text.trim().to_string()),
        });
    }
    Ok(found)
}

/// Requests per second by address, from two readings `elapsed` apart. A
/// slot is left out when it is new since the last reading, took another
/// task's address, or counts less than before (the proxy restarted): its
/// rate over the interval is unknown, and the next reading has it.
pub fn rates(
    previous: &[ServerCount],
    current: &[ServerCount],
    elapsed: Duration,
) -> HashMap<IpAddr, f64> {
    let mut by_addr = HashMap::new();
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return by_addr;
    }
    for now in current {
        let before = previous
            .iter()
            .find(|p| p.backend == now.backend && p.server == now.server && p.addr == now.addr);
        if let Some(before) = before.filter(|b| b.total <= now.total) {
            *by_addr.entry(now.addr).or_insert(0.0) += (now.total - before.total) as f64 / secs;
        }
    }
    by_addr
}

/// Task id by overlay address, from a verbose inspect of the overlay:
/// `Services.NAME.Tasks[]` with `Name` = `service.slot.TASKID` and
/// `EndpointIP`.
pub fn task_addresses(services: &HashMap<String, serde_json::Value>) -> HashMap<IpAddr, String> {
    services
        .values()
        .filter_map(|s| s.get("Tasks")?.as_array())
        .flatten()
        .filter_map(|t| {
            let ip = t.get("EndpointIP")?.as_str()?.parse().ok()?;
            let task = t.get("Name")?.as_str()?.rsplit('.').next()?;
            Some((ip, task.to_string()))
        })
        .collect()
}

/// Reads the edge's stats once a poll and keeps what the next needs.
pub struct RateReader {
    source: Result<Edge, String>,
    client: HttpClient,
    previous: Option<(Instant, Vec<ServerCount>)>,
    /// Task id by address, and the running tasks it was read for.
    addresses: HashMap<IpAddr, String>,
    addresses_for: BTreeSet<String>,
}

struct Edge {
    url: String,
    reached_at: SocketAddr,
    network: String,
}

impl RateReader {
    pub fn new(state: &LabState) -> Self {
        let source = match (state.routing, state.leader()) {
            (Routing::Mesh, _) => Err("per-task rates come from the edge proxy; this lab routes through Swarm's mesh and runs none".to_string()),
            (_, Err(err)) => Err(err.to_string()),
            (Routing::Edge, Ok(leader))
                if state.publish == Publish::Localhost && !leader.published.contains_key(&STATS_PORT) =>
            {
                Err(format!("the edge proxy's stats port {STATS_PORT} is not published on 127.0.0.1 for this lab (made before viz showed rates); re-create the lab to see them"))
            }
            (Routing::Edge, Ok(leader)) => {
                // The edge of the manager holding $ManagerIP: with a
                // virtual address, the one that takes the traffic.
                let reached_at = state.entry(STATS_PORT).unwrap_or_else(|_| leader.endpoint(STATS_PORT));
                Ok(Edge {
                    url: format!("http://{reached_at}{STATS_PATH}"),
                    reached_at,
                    network: state.overlay_network.clone(),
                })
            }
        };
        RateReader {
            source,
            client: HttpClient::new(),
            previous: None,
            addresses: HashMap::new(),
            addresses_for: BTreeSet::new(),
        }
    }

    /// Requests per second by task id, for the `running` tasks the proxy
    /// knows. Any failure leaves every task without a rate and says why in
    /// the status: the rest of the page does not depend on it.
    /// Requests per second by task id, for the `running` tasks the proxy
    /// knows, and by task id what a running task's last health check said
    /// it lacks (an open quote breaker). Any failure leaves every task
    /// without either and says why in the status: the rest of the page does
    /// not depend on it.
    pub async fn read(
        &mut self,
        manager: &Docker,
        running: &BTreeSet<String>,
    ) -> (HashMap<String, f64>, HashMap<String, String>, RateStatus) {
        let unavailable = |note: String| {
            (
                HashMap::new(),
                HashMap::new(),
                RateStatus {
                    available: false,
                    note,
                },
            )
        };
        let edge = match &self.source {
            Ok(edge) => edge,
            Err(why) => return unavailable(why.clone()),
        };
        let counts = match self.client.get(&edge.url, STATS_TIMEOUT).await {
            Ok(r) if r.status == 200 => parse_stats_csv(&String::from_utf8_lossy(&r.body)),
            Ok(r) => Err(format!("HTTP {}", r.status)),
            Err(err) => Err(err),
        };
        let counts = match counts {
            Ok(counts) => counts,
            Err(err) => {
                self.previous = None;
                return unavailable(format!(
                    "no rates: the edge proxy's stats at {} did not answer ({err}); \
                     a lab made before viz showed rates has none until it is re-created",
                    edge.reached_at
                ));
            }
        };
        let now = Instant::now();
        let degraded_at: HashMap<IpAddr, String> = counts
            .iter()
            .filter_map(|c| Some((c.addr, c.degraded.clone()?)))
            .collect();
        let by_addr = match &self.previous {
            Some((then, before)) => rates(before, &counts, now - *then),
            None => HashMap::new(),
        };
        self.previous = Some((now, counts));
        let unknown = by_addr
            .keys()
            .chain(degraded_at.keys())
            .any(|a| !self.addresses.contains_key(a));
        if unknown || *running != self.addresses_for {
            let options = bollard::query_parameters::InspectNetworkOptionsBuilder::new()
                .verbose(true)
                .scope("swarm")
                .build();
            match manager.inspect_network(&edge.network, Some(options)).await {
                Ok(network) => {
                    self.addresses = task_addresses(&network.services.unwrap_or_default());
                    self.addresses_for = running.clone();
                }
                Err(err) => {
                    return unavailable(format!(
                        "no rates: the overlay {} could not be read ({err})",
                        edge.network
                    ))
                }
            }
        }
        let mut by_task: HashMap<String, f64> = HashMap::new();
        for (addr, rate) in by_addr {
            if let Some(task) = self.addresses.get(&addr).filter(|t| running.contains(*t)) {
                *by_task.entry(task.clone()).or_insert(0.0) += rate;
            }
        }
        let degraded = degraded_at
            .into_iter()
            .filter_map(|(addr, text)| Some((self.addresses.get(&addr)?.clone(), text)))
            .filter(|(task, _)| running.contains(task))
            .collect();
        (
            by_task,
            degraded,
            RateStatus {
                available: true,
                note: format!(
                    "requests/s per task, from the edge proxy's stats at {}",
                    edge.reached_at
                ),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "# pxname,svname,qcur,stot,status,req_tot,check_desc,addr,mode,\n";

    fn count(server: &str, addr: &str, total: u64) -> ServerCount {
        ServerCount {
            backend: "accountservice_6767".into(),
            server: server.into(),
            addr: addr.parse().unwrap(),
            total,
            degraded: None,
        }
    }

    #[test]
    fn server_rows_with_an_address_are_read_with_their_request_count() {
        let csv = format!(
            "{HEADER}\
             accountservice_6767,FRONTEND,,99,OPEN,99,,,http,\n\
             accountservice_6767,task1,0,40,UP,,\"Layer7 check passed, code 200\",10.0.1.5:6767,http,\n\
             accountservice_6767,task2,0,7,UP,9,,10.0.1.6:6767,http,\n\
             accountservice_6767,task3,0,0,MAINT (resolution),,,,http,\n\
             accountservice_6767,BACKEND,0,47,UP,,,,http,\n"
        );
        let counts = parse_stats_csv(&csv).unwrap();
        // stot where req_tot is empty for servers (HAProxy 2.6), else req_tot.
        assert_eq!(
            counts,
            vec![
                count("task1", "10.0.1.5", 40),
                count("task2", "10.0.1.6", 9)
            ]
        );
    }

    #[test]
    fn a_passed_checks_text_is_what_the_task_lacks_and_a_failed_ones_is_not() {
        let csv = "# pxname,svname,stot,addr,check_status,last_chk,\n\
             accountservice_6767,task1,4,10.0.1.5:6767,L7OK,quote breaker open,\n\
             accountservice_6767,task2,4,10.0.1.6:6767,L7OK,,\n\
             accountservice_6767,task3,4,10.0.1.7:6767,L7STS,Service Unavailable,\n";
        let rows = parse_stats_csv(csv).unwrap();
        let degraded: Vec<Option<&str>> = rows.iter().map(|r| r.degraded.as_deref()).collect();
        assert_eq!(degraded, [Some("quote breaker open"), None, None]);
    }

    #[test]
    fn stats_that_are_not_haproxy_csv_are_an_error() {
        assert!(parse_stats_csv("<html>503</html>").is_err());
        assert!(parse_stats_csv("# a,b\n1,2\n").is_err());
    }

    #[test]
    fn quoted_fields_keep_their_commas() {
        let csv = format!(
            "{HEADER}\
             accountservice_6767,task1,0,40,UP,,\"say \"\"hi\"\", then, 200\",10.0.1.5:6767,http,\n"
        );
        assert_eq!(
            parse_stats_csv(&csv).unwrap(),
            vec![count("task1", "10.0.1.5", 40)]
        );
    }

    #[test]
    fn rates_are_deltas_over_the_interval_summed_per_address() {
        let before = vec![
            count("task1", "10.0.1.5", 100),
            count("task2", "10.0.1.6", 50),
        ];
        let after = vec![
            count("task1", "10.0.1.5", 150),
            count("task2", "10.0.1.6", 50),
        ];
        let r = rates(&before, &after, Duration::from_millis(500));
        assert_eq!(r[&"10.0.1.5".parse::<IpAddr>().unwrap()], 100.0);
        assert_eq!(r[&"10.0.1.6".parse::<IpAddr>().unwrap()], 0.0);
    }

    #[test]
    fn a_first_reading_a_reset_counter_or_a_moved_slot_has_no_rate() {
        let after = vec![
            count("task1", "10.0.1.5", 10),
            count("task2", "10.0.1.9", 80),
        ];
        assert!(rates(&[], &after, Duration::from_secs(1)).is_empty());
        // task1 counts less than before (the proxy restarted); task2's slot
        // now holds another task's address.
        let before = vec![
            count("task1", "10.0.1.5", 500),
            count("task2", "10.0.1.6", 70),
        ];
        assert!(rates(&before, &after, Duration::from_secs(1)).is_empty());
        assert!(rates(&before, &before, Duration::ZERO).is_empty());
    }

    fn lab(routing: Routing, publish: Publish, published: &[(u16, u16)]) -> LabState {
        use crate::lab::state::{NodeState, RegistryHost, RegistryState, Role};
        let mut state = LabState::new(
            "vr",
            Default::default(),
            "my_network",
            RegistryState {
                runs_on: RegistryHost::Manager,
                container: "vr-registry".into(),
                push_address: String::new(),
                pull_address: "127.0.0.1:5000".into(),
            },
        );
        state.routing = routing;
        state.publish = publish;
        state.nodes.push(NodeState {
            id: "vr-swarm-manager-0".into(),
            hostname: "swarm-manager-0".into(),
            role: Role::Manager,
            address: "127.0.0.1".parse().unwrap(),
            docker_port: 2376,
            published: published.iter().copied().collect(),
        });
        state
    }

    async fn read_once(state: &LabState) -> (HashMap<String, f64>, RateStatus) {
        // Never called: every case here fails before the overlay is read.
        let docker =
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let running = BTreeSet::from(["t1".to_string()]);
        let (rates, _, status) = RateReader::new(state).read(&docker, &running).await;
        (rates, status)
    }

    #[tokio::test]
    async fn without_an_edge_or_its_stats_tasks_have_no_rate_and_the_page_says_why() {
        let (rates, status) = read_once(&lab(Routing::Mesh, Publish::Direct, &[])).await;
        assert!(rates.is_empty());
        assert!(!status.available);
        assert!(status.note.contains("mesh"), "{}", status.note);

        // A localhost lab made before the stats port was published.
        let (_, status) =
            read_once(&lab(Routing::Edge, Publish::Localhost, &[(2376, 49153)])).await;
        assert!(status.note.contains("re-create the lab"), "{}", status.note);

        // Stats that do not answer: no rate, no error for the poll.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (rates, status) = read_once(&lab(
            Routing::Edge,
            Publish::Localhost,
            &[(2376, 49153), (STATS_PORT, closed)],
        ))
        .await;
        assert!(rates.is_empty());
        assert!(!status.available);
        assert!(
            status.note.contains(&format!("127.0.0.1:{closed}")),
            "{}",
            status.note
        );
    }

    #[test]
    fn task_ids_are_read_from_the_overlay_by_address() {
        let services: HashMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"accountservice": {"VIP": "", "Tasks": [
                 {"Name": "accountservice.1.abc123", "EndpointIP": "10.0.1.5"},
                 {"Name": "accountservice.2.def456", "EndpointIP": "10.0.1.6"}]},
               "edge": {"Tasks": [{"Name": "edge.1.zzz", "EndpointIP": "not an address"}]}}"#,
        )
        .unwrap();
        let found = task_addresses(&services);
        assert_eq!(found.len(), 2);
        assert_eq!(found[&"10.0.1.6".parse::<IpAddr>().unwrap()], "def456");
    }
}
