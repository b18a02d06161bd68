//! `class serve`: the class's web front.
//!
//! - `/l/TOKEN/`: a learner's page, their terminal (`term`, a WebSocket to
//!   a TTY exec of their console, with resize), the live picture of their
//!   lab (`viz/`, the visualizer's own page and API) and their client
//!   bundle (`bundle.tar`);
//! - `/b/TOKEN/`: the instructor's board (`api/state`, `reset/LEARNER`)
//!   and the printable cards (`cards`);
//! - `/assets/`: xterm.js and its fit addon, from `web/node_modules`
//!   (installed by `scripts/setup.sh` from `web/package-lock.json`).
//!
//! A token opens its own pages and nothing else: any other path, or a
//! token that is not this one, answers 404 without saying which part was
//! wrong, and the log never holds a token. The class's state is read from
//! its file on each request, so a `class reset` on the command line shows.

pub mod cards;
pub mod deploy;
pub mod terminal;
pub mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bollard::Docker;
use serde::Serialize;

use crate::class::state::{ClassDir, ClassState, Learner, LearnerStatus};
use crate::error::{Error, Result};
use crate::lab::state::{LabDir, LabState};
use crate::ui::Ui;
use crate::viz::server::Hub;

const LEARNER_PAGE: &str = include_str!("learner.html");
const BOARD_PAGE: &str = include_str!("board.html");

/// The three files the pages load, as `web/package-lock.json` pins them.
const ASSETS: [(&str, &str, &str); 3] = [
    ("xterm.js", "@xterm/xterm/lib/xterm.js", "text/javascript"),
    ("xterm.css", "@xterm/xterm/css/xterm.css", "text/css"),
    (
        "addon-fit.js",
        "@xterm/addon-fit/lib/addon-fit.js",
        "text/javascript",
    ),
];

/// Where the xterm assets are looked for when `--assets` is not given:
/// this checkout's `web/node_modules`.
pub fn default_assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web/node_modules")
}

/// The xterm assets, by the name they are served under.
pub struct Assets(HashMap<&'static str, (Vec<u8>, &'static str)>);

/// The assets, read once at start: a missing one is a one-line error
/// before anything listens.
pub fn load_assets(dir: &Path) -> Result<Assets> {
    let mut found = HashMap::new();
    for (name, path, kind) in ASSETS {
        let file = dir.join(path);
        let bytes = std::fs::read(&file).map_err(|_| {
            Error::usage(format!(
                "the terminal's asset {} is missing: run `scripts/setup.sh` (it runs `npm ci --prefix web`), or point --assets at a node_modules that has @xterm/xterm and @xterm/addon-fit",
                file.display()
            ))
        })?;
        found.insert(name, (bytes, kind));
    }
    Ok(Assets(found))
}

/// What the server shares between requests.
pub struct App {
    pub class: String,
    dir: ClassDir,
    /// `http(s)://HOST:PORT`, what links start with.
    pub base_url: String,
    /// The TLS certificate's SHA-256, printed on the cards.
    pub fingerprint: Option<String>,
    assets: Assets,
    pub host: Docker,
    /// Terminals open now, by learner number: the board's "page open".
    open: Mutex<HashMap<u32, usize>>,
    /// Learners whose deploy is running: one at a time each.
    deploying: Mutex<std::collections::HashSet<u32>>,
    /// Each lab's manager, connected once (TLS) for the board's polls;
    /// dropped when a poll fails or the lab is reset.
    managers: tokio::sync::Mutex<HashMap<String, Docker>>,
    /// One visualizer per lab, started on its first view.
    vizzes: tokio::sync::Mutex<HashMap<String, (Arc<Hub>, tokio::task::AbortHandle)>>,
    ui: Ui,
}

impl App {
    fn class(&self) -> Option<ClassState> {
        self.dir.load().ok()
    }

    fn learner(&self, token: &str) -> Option<(ClassState, Learner)> {
        let class = self.class()?;
        let learner = class.learner_by_token(token)?.clone();
        Some((class, learner))
    }

    fn board(&self, token: &str) -> Option<ClassState> {
        self.class().filter(|c| c.board_token.matches(token))
    }

    pub fn learner_link(&self, learner: &Learner) -> String {
        format!("{}/l/{}/", self.base_url, learner.token.reveal())
    }

    pub fn board_link(&self, class: &ClassState) -> String {
        format!("{}/b/{}/", self.base_url, class.board_token.reveal())
    }

    /// Counts a terminal open until the guard drops.
    fn page_opened(self: &Arc<Self>, number: u32) -> OpenPage {
        *self.open.lock().unwrap().entry(number).or_default() += 1;
        OpenPage {
            app: self.clone(),
            number,
        }
    }
}

struct OpenPage {
    app: Arc<App>,
    number: u32,
}

impl Drop for OpenPage {
    fn drop(&mut self) {
        if let Some(n) = self.app.open.lock().unwrap().get_mut(&self.number) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Everything `class serve` needs besides the listener.
pub struct Setup {
    pub class: String,
    pub base_url: String,
    pub fingerprint: Option<String>,
    pub assets: Assets,
    pub ui: Ui,
}

pub async fn app(setup: Setup) -> Result<Arc<App>> {
    let dir = ClassDir::new(&setup.class);
    dir.load()?;
    let assets = setup.assets;
    Ok(Arc::new(App {
        class: setup.class,
        dir,
        base_url: setup.base_url,
        fingerprint: setup.fingerprint,
        assets,
        host: crate::docker::connect_host().await?,
        open: Mutex::default(),
        deploying: Mutex::default(),
        managers: tokio::sync::Mutex::default(),
        vizzes: tokio::sync::Mutex::default(),
        ui: setup.ui,
    }))
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/assets/{file}", get(asset))
        .route("/l/{token}", get(to_slash))
        .route("/l/{token}/", get(learner_page))
        .route("/l/{token}/info", get(learner_info))
        .route("/l/{token}/term", get(learner_terminal))
        .route("/l/{token}/bundle.tar", get(learner_bundle))
        .route("/l/{token}/viz", get(to_slash))
        .route("/l/{token}/viz/", get(learner_viz_page))
        .route("/l/{token}/viz/{*rest}", get(learner_viz))
        .route("/b/{token}", get(to_slash))
        .route("/b/{token}/", get(board_page))
        .route("/b/{token}/api/state", get(board_state))
        .route("/b/{token}/reset/{learner}", post(board_reset))
        .route("/b/{token}/cards", get(cards::page))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The token is in the path: no page of ours sends it anywhere.
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

async fn to_slash(uri: axum::http::Uri) -> Response {
    Redirect::permanent(&format!("{}/", uri.path())).into_response()
}

async fn asset(State(app): State<Arc<App>>, UrlPath(file): UrlPath<String>) -> Response {
    match app.assets.0.get(file.as_str()) {
        Some((bytes, kind)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            bytes.clone(),
        )
            .into_response(),
        None => not_found().await,
    }
}

async fn learner_page(State(app): State<Arc<App>>, UrlPath(token): UrlPath<String>) -> Response {
    match app.learner(&token) {
        Some(_) => page(LEARNER_PAGE),
        None => not_found().await,
    }
}

#[derive(Serialize)]
struct LearnerInfo {
    class: String,
    learner: String,
    number: u32,
    lab: String,
    manager_ip: Option<String>,
    status: LearnerStatus,
}

async fn learner_info(State(app): State<Arc<App>>, UrlPath(token): UrlPath<String>) -> Response {
    let Some((class, learner)) = app.learner(&token) else {
        return not_found().await;
    };
    let manager_ip = LabDir::new(&learner.lab)
        .load()
        .ok()
        .and_then(|s| s.manager_ip().ok())
        .map(|ip| ip.to_string());
    Json(LearnerInfo {
        class: class.name,
        learner: learner.name,
        number: learner.number,
        lab: learner.lab,
        manager_ip,
        status: learner.status,
    })
    .into_response()
}

async fn learner_terminal(
    State(app): State<Arc<App>>,
    UrlPath(token): UrlPath<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some((class, learner)) = app.learner(&token) else {
        return not_found().await;
    };
    let app2 = app.clone();
    upgrade.on_upgrade(move |socket| async move {
        let _open = app2.page_opened(learner.number);
        terminal::run(socket, &app2.host, &class.name, learner.number).await;
    })
}

/// The learner's client bundle: the env file and the lab's client
/// certificate, as `docker-machine env` would point a shell at it.
async fn learner_bundle(State(app): State<Arc<App>>, UrlPath(token): UrlPath<String>) -> Response {
    let Some((_, learner)) = app.learner(&token) else {
        return not_found().await;
    };
    match bundle(&learner) {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-tar"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_str(&format!(
                        "attachment; filename=\"{}-bundle.tar\"",
                        learner.lab
                    ))
                    .expect("a lab name is a valid header"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            bytes,
        )
            .into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response(),
    }
}

fn bundle(learner: &Learner) -> Result<Vec<u8>> {
    let dir = LabDir::new(&learner.lab);
    let state = dir.load()?;
    let leader = state.leader()?;
    let top = format!("{}-bundle", learner.lab);
    let env = format!(
        "# Source this file: . ./env  (the lab's engine, as this class's server reaches it)\n\
         export DOCKER_HOST=tcp://{}:{}\nexport DOCKER_TLS_VERIFY=1\n\
         export DOCKER_CERT_PATH=\"$(cd \"$(dirname \"${{BASH_SOURCE:-$0}}\")\" && pwd)\"\n\
         export ManagerIP={}\n",
        leader.address, leader.docker_port, leader.address
    );
    let mut files = vec![(format!("{top}/env"), env.into_bytes(), 0o644)];
    for (file, mode) in [("ca.pem", 0o644), ("cert.pem", 0o644), ("key.pem", 0o600)] {
        let path = dir.client_certs().join(file);
        let bytes = std::fs::read(&path)
            .map_err(|err| Error::failed(format!("reading {}: {err}", path.display())))?;
        files.push((format!("{top}/{file}"), bytes, mode));
    }
    crate::tarball::pack(files.iter().map(|(p, b, m)| (p.as_str(), b.as_slice(), *m)))
}

async fn learner_viz_page(
    State(app): State<Arc<App>>,
    UrlPath(token): UrlPath<String>,
) -> Response {
    viz(app, token, String::new()).await
}

async fn learner_viz(
    State(app): State<Arc<App>>,
    UrlPath((token, rest)): UrlPath<(String, String)>,
) -> Response {
    viz(app, token, rest).await
}

async fn viz(app: Arc<App>, token: String, rest: String) -> Response {
    let Some((_, learner)) = app.learner(&token) else {
        return not_found().await;
    };
    let hub = match hub_of(&app, &learner.lab).await {
        Ok(hub) => hub,
        Err(err) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response(),
    };
    let path = format!("/{rest}");
    crate::viz::server::answer(&path, &hub).map(Body::new)
}

/// The lab's visualizer hub, its poller started on first use.
async fn hub_of(app: &Arc<App>, lab: &str) -> Result<Arc<Hub>> {
    let mut vizzes = app.vizzes.lock().await;
    if let Some((hub, _)) = vizzes.get(lab) {
        return Ok(hub.clone());
    }
    let state = LabDir::new(lab).load()?;
    let manager = manager_of(&state).await?;
    let address = state.manager_ip()?.to_string();
    let mut poller = crate::viz::poll::Poller::new(manager, &address, &state);
    let hub = Hub::new(crate::viz::poll::empty_state(&state.name, &address));
    hub.publish(poller.snapshot().await);
    let polled = hub.clone();
    let poller = tokio::spawn(async move { poller.run(&polled).await });
    vizzes.insert(lab.to_string(), (hub.clone(), poller.abort_handle()));
    Ok(hub)
}

async fn manager_of(state: &LabState) -> Result<Docker> {
    let dir = LabDir::new(&state.name);
    crate::docker::connect_node(&state.docker_host()?, &dir.client_certs()).await
}

async fn board_page(State(app): State<Arc<App>>, UrlPath(token): UrlPath<String>) -> Response {
    match app.board(&token) {
        Some(_) => page(BOARD_PAGE),
        None => not_found().await,
    }
}

/// One learner's row on the board.
#[derive(Debug, Serialize)]
pub struct Row {
    pub learner: String,
    pub number: u32,
    pub lab: String,
    pub state: &'static str,
    pub link: String,
    pub page_open: bool,
    pub nodes_ready: u32,
    pub nodes: u32,
    pub services: Vec<ServiceRow>,
    pub last_deploy: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ServiceRow {
    pub name: String,
    pub running: u64,
    pub replicas: u64,
    pub answering: bool,
}

#[derive(Debug, Serialize)]
pub struct Board {
    pub class: String,
    pub driver: String,
    pub board: String,
    pub learners: Vec<Row>,
}

/// The board's model: every lab asked at once, each with a deadline, so
/// one lab that does not answer slows nothing.
pub async fn board_of(app: &Arc<App>, class: &ClassState) -> Board {
    let rows = futures_util::future::join_all(class.learners.iter().map(|l| row(app, l))).await;
    Board {
        class: class.name.clone(),
        driver: class.driver.as_str().to_string(),
        board: app.board_link(class),
        learners: rows,
    }
}

async fn row(app: &Arc<App>, learner: &Learner) -> Row {
    let mut row = Row {
        learner: learner.name.clone(),
        number: learner.number,
        lab: learner.lab.clone(),
        state: learner.status.as_str(),
        link: app.learner_link(learner),
        page_open: app
            .open
            .lock()
            .unwrap()
            .get(&learner.number)
            .copied()
            .unwrap_or(0)
            > 0,
        nodes_ready: 0,
        nodes: 0,
        services: Vec::new(),
        last_deploy: learner.last_deploy_unix.map(|t| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t))
                .to_string()
        }),
        error: learner.error.clone(),
    };
    if learner.status != LearnerStatus::Ready {
        return row;
    }
    let Ok(state) = LabDir::new(&learner.lab).load() else {
        row.state = "missing";
        return row;
    };
    let health = async {
        let cached = app.managers.lock().await.get(&state.name).cloned();
        let manager = match cached {
            Some(manager) => manager,
            None => {
                let manager = manager_of(&state).await?;
                app.managers
                    .lock()
                    .await
                    .insert(state.name.clone(), manager.clone());
                manager
            }
        };
        let health = lab_health(&state, &manager).await;
        if health.is_err() {
            app.managers.lock().await.remove(&state.name);
        }
        health
    };
    let asked = tokio::time::timeout(Duration::from_secs(3), health).await;
    match asked {
        Ok(Ok((ready, nodes, services))) => {
            row.nodes_ready = ready;
            row.nodes = nodes;
            row.services = services;
        }
        Ok(Err(err)) => row.error = Some(err.to_string()),
        Err(_) => row.error = Some("the lab's manager did not answer within 3 s".into()),
    }
    row
}

/// Nodes ready, and each service's running tasks and whether it answers
/// through `$ManagerIP`.
async fn lab_health(state: &LabState, manager: &Docker) -> Result<(u32, u32, Vec<ServiceRow>)> {
    use bollard::models::{NodeState, TaskState};
    let nodes = manager
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .map_err(|err| Error::failed(format!("listing nodes: {err}")))?;
    let ready = nodes
        .iter()
        .filter(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY))
        .count() as u32;
    let tasks = manager
        .list_tasks(None::<bollard::query_parameters::ListTasksOptions>)
        .await
        .map_err(|err| Error::failed(format!("listing tasks: {err}")))?;
    let probe = crate::http::HttpClient::new();
    let mut services = Vec::new();
    for service in &state.services {
        let ids: Vec<String> = manager
            .inspect_service(&service.name, None)
            .await
            .ok()
            .and_then(|s| s.id)
            .into_iter()
            .collect();
        let running = tasks
            .iter()
            .filter(|t| t.service_id.as_ref().is_some_and(|id| ids.contains(id)))
            .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
            .count() as u64;
        let answering = match (service.ports.first(), service.probe.as_ref()) {
            (Some(&port), Some(path)) => {
                let url = format!("http://{}{path}", state.entry(port)?);
                probe
                    .get(&url, Duration::from_secs(1))
                    .await
                    .is_ok_and(|r| r.status == 200)
            }
            _ => running > 0,
        };
        services.push(ServiceRow {
            name: service.name.clone(),
            running,
            replicas: service.replicas,
            answering,
        });
    }
    Ok((ready, nodes.len() as u32, services))
}

async fn board_state(State(app): State<Arc<App>>, UrlPath(token): UrlPath<String>) -> Response {
    let Some(class) = app.board(&token) else {
        return not_found().await;
    };
    Json(board_of(&app, &class).await).into_response()
}

async fn board_reset(
    State(app): State<Arc<App>>,
    UrlPath((token, who)): UrlPath<(String, String)>,
) -> Response {
    let Some(class) = app.board(&token) else {
        return not_found().await;
    };
    let Some(learner) = class.learner(&who).cloned() else {
        return (StatusCode::NOT_FOUND, "no such learner\n").into_response();
    };
    if matches!(
        learner.status,
        LearnerStatus::Creating | LearnerStatus::Resetting
    ) {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"learner": learner.name, "state": learner.status.as_str()})),
        )
            .into_response();
    }
    // Marked before the answer, so the board's next poll shows it.
    if let Err(err) =
        crate::class::run::set_status(&app.dir, learner.number, LearnerStatus::Resetting, None)
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response();
    }
    // The lab's poller and manager go with it; the next view and poll
    // connect to the new lab.
    if let Some((_, poller)) = app.vizzes.lock().await.remove(&learner.lab) {
        poller.abort();
    }
    app.managers.lock().await.remove(&learner.lab);
    let class_name = app.class.clone();
    let ui = app.ui.clone();
    let name = learner.name.clone();
    let answer = serde_json::json!({"learner": name.clone(), "state": "resetting"});
    tokio::spawn(async move {
        match crate::class::run::reset(&class_name, &learner.number.to_string(), &ui).await {
            Ok(seconds) => ui.info(format!("{name}'s lab was reset in {seconds:.1} s")),
            Err(err) => ui.warn(format!("resetting {name}'s lab failed: {err}")),
        }
    });
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

/// Serves `app` on `listener` until the process stops: plain HTTP, or TLS
/// with `tls`. WebSocket upgrades work on both. Beside it, the consoles'
/// deploys on `deploys` (the class network's gateway, plain HTTP: that
/// bridge exists only on this host).
pub async fn serve(
    listener: tokio::net::TcpListener,
    deploys: tokio::net::TcpListener,
    app: Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<()> {
    let deploy_router = deploy::router(app.clone());
    tokio::spawn(async move {
        let _ = axum::serve(deploys, deploy_router).await;
    });
    let router = router(app);
    let Some(acceptor) = tls else {
        return axum::serve(listener, router)
            .await
            .map_err(|err| Error::failed(format!("serving the class: {err}")));
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            // A client that fails the handshake (a plain-HTTP request, an
            // unknown CA) is its own business.
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
