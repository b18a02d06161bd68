//! `goblog-lab bench`: finds the lab's own address to load, runs the load
//! generator with a live line on stderr (and the resources sampler beside
//! it, in a task of its own so a slow node never holds up a request), and
//! prints the report on stdout (and writes it as a page with `-o html
//! FILE`), also when Ctrl-C ends the run early.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::bench::kill::{self, Events};
use crate::bench::load::{self, Plan, Recorder, Shared, Target};
use crate::bench::plan::Model;
use crate::bench::report::{Latency, Report};
use crate::bench::resources::{Machine, Resources, Sampler};
use crate::cli::{BenchArgs, BenchOutput};
use crate::commands::create::interrupted;
use crate::error::{Context as _, Error, Result};
use crate::lab::state::{LabDir, LabState, NodeState};
use crate::ui::Ui;

/// Most connections the users model opens by default: one per user, as
/// Gatling does, but no more than the edge proxy is comfortable with.
const MAX_DEFAULT_CONNECTIONS: u32 = 1000;
/// Open loop: enough for a few hundred requests a second at lab latencies
/// to find a free connection, so the queue does not add latency.
const RATE_CONNECTIONS: u32 = 50;
/// How long a heal may still take once the load has ended.
const HEAL_GRACE: Duration = Duration::from_secs(60);
/// Without a terminal, a progress line this often.
const PLAIN_EVERY: u64 = 5;

pub async fn run(args: &BenchArgs, ui: &Ui) -> Result<()> {
    let page_path = page_path(args)?;
    let state = lab_state(&args.name)?;
    let target = target(args, &state)?;
    let plan = plan(args);
    ui.info(format!(
        "GET {} on lab '{}': {} for {}, {} connections",
        target.url(),
        state.name,
        plan.model,
        humantime::format_duration(plan.duration),
        plan.connections
    ));

    let kill = kill_plan(args, &state)?;
    let provider = match kill {
        Some(_) => Some(crate::provider::for_lab(&state, &LabDir::new(&state.name), ui).await?),
        None => None,
    };

    // Opened before the load, so a path that cannot be written fails now
    // rather than after the run; not truncated until the page is ready.
    let page = page_path.map(open_page).transpose()?;

    let resources: Arc<std::sync::Mutex<Resources>> = Arc::default();
    let sampler = if args.no_resources {
        None
    } else {
        sampler(&state, ui).await
    };
    let sampler = sampler.map(|sampler| tokio::spawn(sampler.run(resources.clone())));

    let recorder: Shared = Arc::default();
    let events: Events = Arc::default();
    let live = ui.live();
    let started = Instant::now();
    let started_at = SystemTime::now();
    let chaos = match (kill, provider) {
        (Some(node), Some(provider)) => {
            let spec = args.kill.clone().expect("kill_plan read it");
            Some(tokio::spawn(kill::run(
                provider,
                node,
                spec.at,
                args.heal_after,
                started,
                events.clone(),
            )))
        }
        _ => None,
    };
    // Boxed so an interrupted run can drop it before the report: the load
    // threads stop and hand in what they recorded when it is dropped.
    let mut load = Box::pin(load::run(&plan, &target, recorder.clone()));
    let stop = interrupted();
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = 0;
    let (elapsed, was_interrupted) = loop {
        tokio::select! {
            elapsed = &mut load => break (elapsed, false),
            () = &mut stop => break (started.elapsed(), true),
            _ = ticker.tick() => {
                let (line, completed) = progress(&recorder, started.elapsed(), plan.duration, last);
                last = completed;
                match &live {
                    Some(bar) => bar.set_message(line),
                    None if started.elapsed().as_secs().is_multiple_of(PLAIN_EVERY)
                        && started.elapsed().as_secs() > 0 => ui.info(line),
                    None => {}
                }
            }
        }
    };
    drop(load);
    if let Some(bar) = &live {
        ui.end_live(bar);
    }
    if let Some(sampler) = &sampler {
        sampler.abort();
    }
    if let Some(mut chaos) = chaos {
        // A heal still under way gets a little time, never an unbounded wait.
        if was_interrupted || tokio::time::timeout(HEAL_GRACE, &mut chaos).await.is_err() {
            chaos.abort();
        }
    }
    let events = events.lock().expect("no panics while noting").clone();
    if let Some(spec) = &args.kill {
        let healed = events.iter().any(|e| e.what.starts_with("healed "));
        let killed = events.iter().any(|e| e.what.starts_with("killed "));
        if killed && !healed {
            ui.warn(format!(
                "{} is still stopped: `goblog-lab start --name {}` starts it again",
                spec.node, state.name
            ));
        }
    }
    let recorded = recorder.lock().expect("no panics while recording").clone();
    let report = Report::new(
        &state.name,
        &plan,
        &target,
        &recorded,
        elapsed,
        was_interrupted,
        events,
        resources.lock().expect("no panics while sampling").clone(),
    );
    match args.output {
        BenchOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        ),
        BenchOutput::Table | BenchOutput::Html => print!("{}", report.table()),
    }
    if let Some((path, file)) = page {
        let (cpu, memory) = crate::bench::html::task_series(&report.resources);
        let html = crate::bench::html::render(&report, started_at, &cpu, &memory);
        write_page(&path, file, &html)?;
        ui.info(format!("wrote {}", path.display()));
    }
    if was_interrupted {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// FILE goes with `-o html` and only with it.
fn page_path(args: &BenchArgs) -> Result<Option<PathBuf>> {
    match (args.output, &args.file) {
        (BenchOutput::Html, Some(path)) => Ok(Some(path.clone())),
        (BenchOutput::Html, None) => Err(Error::usage(
            "-o html needs the FILE to write the page to: goblog-lab bench -o html report.html",
        )),
        (_, Some(path)) => Err(Error::usage(format!(
            "unexpected argument '{}': only -o html writes a FILE (goblog-lab bench -o html {})",
            path.display(),
            path.display()
        ))),
        (_, None) => Ok(None),
    }
}

fn open_page(path: PathBuf) -> Result<(PathBuf, File)> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot write the HTML report to {}", path.display()))?;
    Ok((path, file))
}

fn write_page(path: &Path, mut file: File, html: &str) -> Result<()> {
    file.set_len(0)
        .and_then(|()| file.write_all(html.as_bytes()))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the HTML report to {}", path.display()))
}

/// The lab's saved state; a lab that does not exist is a mistake in the
/// command line (exit 2), like any other argument.
fn lab_state(name: &str) -> Result<LabState> {
    crate::lab::name::validate(name)?;
    let state = match LabDir::new(name).load() {
        Err(Error::LabNotFound(name)) => return Err(Error::usage(Error::LabNotFound(name))),
        other => other?,
    };
    if state.stopped {
        return Err(Error::LabStopped(state.name));
    }
    Ok(state)
}

/// Only the lab's own addresses: $ManagerIP, or a node named by --node.
fn target(args: &BenchArgs, state: &LabState) -> Result<Target> {
    let port = match args.port {
        Some(port) => port,
        None => state
            .services
            .iter()
            .filter(|s| !s.ports.is_empty())
            .min_by_key(|s| s.name != "accountservice")
            .map(|s| s.ports[0])
            .ok_or_else(|| {
                Error::usage(format!(
                    "lab '{}' publishes no service port: deploy one, or name the port with --port",
                    state.name
                ))
            })?,
    };
    let address = match &args.node {
        // The virtual address, where the lab has one: the load follows it
        // to whichever manager holds it.
        None => state.entry(port)?,
        Some(hostname) => (find_node(state, hostname)?.address, port).into(),
    };
    Ok(Target {
        address,
        path: args.path.clone(),
        ids: args.ids,
    })
}

/// The resources sampler: each node's engine (a node that does not answer
/// is read through its provider alone) and the manager's task list. With
/// no manager there is nothing to name the tasks by, and no resources.
async fn sampler(state: &LabState, ui: &Ui) -> Option<Sampler> {
    let dir = LabDir::new(&state.name);
    let certs = dir.client_certs();
    let machines = futures_util::future::join_all(state.nodes.iter().map(|node| {
        let certs = certs.clone();
        async move {
            let engine = crate::docker::connect_node(&node.docker_host(), &certs).await;
            (node.clone(), engine)
        }
    }))
    .await;
    let machines: Vec<Machine> = machines
        .into_iter()
        .map(|(node, engine)| {
            let engine = engine
                .map_err(|err| {
                    ui.warn(format!(
                        "resources of {} without its engine: {err}",
                        node.hostname
                    ))
                })
                .ok();
            Machine { node, engine }
        })
        .collect();
    let leader = state.leader().ok()?;
    let manager = match state.vip {
        // Whichever manager holds $ManagerIP names the tasks, before and
        // after a kill of the first.
        Some(_) => crate::docker::connect_node(&state.docker_host().ok()?, &certs)
            .await
            .ok(),
        None => machines
            .iter()
            .find(|m| m.node.hostname == leader.hostname)
            .and_then(|m| m.engine.clone()),
    };
    let provider = crate::provider::for_lab(state, &dir, ui).await;
    match (manager, provider) {
        (Some(manager), Ok(provider)) => Some(Sampler::new(manager, provider, machines)),
        (None, _) => {
            ui.warn("no resources: the manager's engine did not answer");
            None
        }
        (_, Err(err)) => {
            ui.warn(format!("no resources: {err}"));
            None
        }
    }
}

/// The node `--kill` names, checked before any load is sent.
fn kill_plan(args: &BenchArgs, state: &LabState) -> Result<Option<NodeState>> {
    let Some(spec) = &args.kill else {
        return Ok(None);
    };
    let node = find_node(state, &spec.node)?;
    // With a virtual $ManagerIP any node may go: that is what it is for.
    if state.vip.is_none() && node.address == state.leader()?.address {
        return Err(Error::usage(format!(
            "--kill {}: that is $ManagerIP, where the load goes in; kill a worker instead",
            spec.node
        )));
    }
    let healed_at = spec.at + args.heal_after.unwrap_or_default();
    if spec.at >= args.duration || healed_at >= args.duration {
        return Err(Error::usage(format!(
            "--kill at {} and --heal-after {} fall outside the {} run: lengthen --duration",
            humantime::format_duration(spec.at),
            humantime::format_duration(args.heal_after.unwrap_or_default()),
            humantime::format_duration(args.duration)
        )));
    }
    Ok(Some(node.clone()))
}

fn find_node<'a>(state: &'a LabState, hostname: &str) -> Result<&'a NodeState> {
    state
        .nodes
        .iter()
        .find(|n| n.hostname == hostname)
        .ok_or_else(|| {
            let known: Vec<&str> = state.nodes.iter().map(|n| n.hostname.as_str()).collect();
            Error::usage(format!(
                "lab '{}' has no node '{hostname}': its nodes are {}",
                state.name,
                known.join(", ")
            ))
        })
}

fn plan(args: &BenchArgs) -> Plan {
    let (model, connections) = match args.rate {
        Some(rate) => (
            Model::Rate { rate },
            args.connections.unwrap_or(RATE_CONNECTIONS),
        ),
        None => (
            Model::Users {
                users: args.users,
                pause: args.pause,
                ramp: args.ramp,
            },
            // More connections than users would sit idle.
            args.connections
                .unwrap_or(MAX_DEFAULT_CONNECTIONS)
                .min(args.users),
        ),
    };
    Plan {
        model,
        duration: args.duration,
        connections: connections as usize,
        timeout: args.timeout,
    }
}

/// The live line: time, rate over the last tick, p99 so far, failures.
fn progress(recorder: &Shared, elapsed: Duration, duration: Duration, last: u64) -> (String, u64) {
    let recorded: std::sync::MutexGuard<'_, Recorder> =
        recorder.lock().expect("no panics while recording");
    let p99 =
        Latency::of(&recorded.latency).map_or_else(|| "-".into(), |l| format!("{:.2} ms", l.p99));
    let line = format!(
        "{:>3}s of {}s  {:>6} req/s  p99 {p99}  {} failed  {} requests",
        elapsed.as_secs(),
        duration.as_secs(),
        recorded.completed.saturating_sub(last),
        recorded.failures.total,
        recorded.completed
    );
    (line, recorded.completed)
}
