//! `goblog-lab class ...`: the command line of [`crate::class`]. It maps
//! flags to the class's calls and prints: the links to stdout (or JSON),
//! progress to stderr, one line per lab.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::class::run::{self, ClassRequest, Progress};
use crate::class::state::{saved_classes, ClassDir, ClassState, LearnerStatus};
use crate::class::web;
use crate::cli::{ClassArgs, ClassCommand, ClassCreateArgs, ClassServeArgs, Output};
use crate::commands::create::interrupted;
use crate::error::{Error, Result};
use crate::ui::Ui;

pub async fn run(args: ClassArgs, ui: &Ui) -> Result<()> {
    match args.command {
        ClassCommand::Create(args) => create(args, ui).await,
        ClassCommand::Serve(args) => serve(args, ui).await,
        ClassCommand::Status(args) => {
            let class = ClassDir::new(&args.name).load()?;
            print_links(&class, &args.url, args.output);
            Ok(())
        }
        ClassCommand::Ls(args) => {
            let classes: Vec<ClassSummary> = saved_classes()
                .into_iter()
                .filter_map(|name| ClassDir::new(&name).load().ok())
                .map(|c| ClassSummary {
                    ready: c
                        .learners
                        .iter()
                        .filter(|l| l.status == LearnerStatus::Ready)
                        .count(),
                    learners: c.learners.len(),
                    driver: c.driver.as_str().to_string(),
                    name: c.name,
                })
                .collect();
            if args.output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&classes).expect("serialises")
                );
            } else if classes.is_empty() {
                ui.info("no classes here; `goblog-lab class create --learners N` makes one");
            } else {
                println!(
                    "{:<22} {:<8} {:>8} {:>6}",
                    "CLASS", "DRIVER", "LEARNERS", "READY"
                );
                for c in &classes {
                    println!(
                        "{:<22} {:<8} {:>8} {:>6}",
                        c.name, c.driver, c.learners, c.ready
                    );
                }
            }
            Ok(())
        }
        ClassCommand::Reset(args) => {
            let step = ui.step(format!(
                "Resetting {} of class '{}' ♻️",
                args.learner, args.name
            ));
            let seconds = run::reset(&args.name, &args.learner, ui).await?;
            step.done_with(format!("({seconds:.1} s)"));
            Ok(())
        }
        ClassCommand::Destroy(args) => {
            let step = ui.step(format!("Deleting class '{}' 🔥", args.name));
            let removed = run::destroy(&args.name, ui).await?;
            step.done_with(format!(
                "({} labs, {} consoles, {} volumes)",
                removed.labs, removed.consoles, removed.volumes
            ));
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct ClassSummary {
    name: String,
    driver: String,
    learners: usize,
    ready: usize,
}

async fn create(args: ClassCreateArgs, ui: &Ui) -> Result<()> {
    let request = ClassRequest {
        name: args.name.clone(),
        learners: args.learners,
        driver: args.driver,
        parallel: usize::from(args.parallel),
    };
    let progress = ClassProgress::new(ui);
    let made = run::create(request, ui, &progress, interrupted()).await?;
    progress.clear();
    let failed: Vec<_> = made
        .state
        .learners
        .iter()
        .filter(|l| l.status == LearnerStatus::Failed)
        .collect();
    ui.info(format!(
        "class '{}': {} of {} labs ready in {:.1} s (this machine holds about {}: {})",
        made.state.name,
        made.state.learners.len() - failed.len(),
        made.state.learners.len(),
        made.seconds,
        made.fit.labs,
        made.fit.limited_by
    ));
    for learner in &failed {
        ui.warn(format!(
            "{} ({}) failed twice: {}; `goblog-lab class reset {} --name {}` tries again",
            learner.name,
            learner.lab,
            learner.error.as_deref().unwrap_or(""),
            learner.number,
            made.state.name
        ));
    }
    print_links(&made.state, "http://127.0.0.1:8080", args.output);
    if args.output == Output::Table {
        println!();
        println!(
            "Serve the pages: goblog-lab class serve --name {}",
            made.state.name
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct LearnerLine<'a> {
    learner: &'a str,
    number: u32,
    lab: &'a str,
    state: &'a str,
    link: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct StatusDoc<'a> {
    class: &'a str,
    driver: &'a str,
    board: String,
    cards: String,
    learners: Vec<LearnerLine<'a>>,
}

fn print_links(class: &ClassState, base: &str, output: Output) {
    let base = base.trim_end_matches('/');
    let doc = StatusDoc {
        class: &class.name,
        driver: class.driver.as_str(),
        board: format!("{base}/b/{}/", class.board_token.reveal()),
        cards: format!("{base}/b/{}/cards", class.board_token.reveal()),
        learners: class
            .learners
            .iter()
            .map(|l| LearnerLine {
                learner: &l.name,
                number: l.number,
                lab: &l.lab,
                state: l.status.as_str(),
                link: format!("{base}/l/{}/", l.token.reveal()),
                error: l.error.as_deref(),
            })
            .collect(),
    };
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serialises")
        );
        return;
    }
    println!("{:<12} {:<22} {:<10} LINK", "LEARNER", "LAB", "STATE");
    for l in &doc.learners {
        println!("{:<12} {:<22} {:<10} {}", l.learner, l.lab, l.state, l.link);
    }
    println!("board  {}", doc.board);
    println!("cards  {}", doc.cards);
}

/// The class's progress: with a terminal, a line per lab that shows its
/// current step; without, each lab's lines prefixed with its name.
struct ClassProgress {
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
    quiet: bool,
    verbose: bool,
}

impl ClassProgress {
    fn new(ui: &Ui) -> Self {
        let fancy = std::io::stderr().is_terminal() && !ui.is_quiet();
        ClassProgress {
            bars: fancy.then(|| (MultiProgress::new(), Mutex::default())),
            quiet: ui.is_quiet(),
            verbose: ui.is_verbose(),
        }
    }

    fn bar(&self, lab: &str) -> Option<ProgressBar> {
        let (multi, bars) = self.bars.as_ref()?;
        let mut bars = bars.lock().unwrap();
        Some(
            bars.entry(lab.to_string())
                .or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template(
                            " {spinner:.cyan} {prefix:.bold} {msg} {elapsed:.dim}",
                        )
                        .expect("static template"),
                    );
                    bar.set_prefix(format!("{lab:<14}"));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                })
                .clone(),
        )
    }

    fn clear(&self) {
        if let Some((multi, _)) = &self.bars {
            let _ = multi.clear();
        }
    }
}

impl Progress for ClassProgress {
    fn lab_ui(&self, lab: &str) -> Ui {
        if self.quiet {
            return Ui::new(true, false);
        }
        let bar = self.bar(lab);
        let name = lab.to_string();
        let sink = move |line: &str| match &bar {
            Some(bar) => {
                let text = line.trim_start_matches([' ', '•']).trim_end_matches(" ...");
                bar.set_message(text.to_string());
            }
            None => eprintln!("{name:<14}{line}"),
        };
        Ui::to_sink(Arc::new(sink), self.verbose)
    }

    fn retrying(&self, lab: &str, error: &str) {
        if self.quiet {
            return;
        }
        match self.bar(lab) {
            Some(bar) => bar.set_message(format!("failed ({error}); making it again")),
            None => eprintln!("{lab:<14} ✗ {error}; making it again"),
        }
    }

    fn finished(&self, lab: &str, outcome: std::result::Result<(), &str>) {
        let line = match outcome {
            Ok(()) => "✓ ready".to_string(),
            Err(err) => format!("✗ {err}"),
        };
        if self.quiet {
            return;
        }
        match self.bar(lab) {
            Some(bar) => bar.finish_with_message(line),
            None => eprintln!("{lab:<14} {line}"),
        }
    }
}

async fn serve(args: ClassServeArgs, ui: &Ui) -> Result<()> {
    let class = ClassDir::new(&args.name).load()?;
    let assets = web::load_assets(&args.assets.clone().unwrap_or_else(web::default_assets))?;
    let loopback = args.listen.ip().is_loopback();
    let tls = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        Some(web::tls::from_files(cert, key)?)
    } else if loopback || args.insecure_plain_http {
        None
    } else {
        Some(web::tls::from_class_ca(
            &args.name,
            &args.listen,
            args.public_host.as_deref(),
        )?)
    };
    let listener = bind(args.listen).await?;
    let host_engine = crate::docker::connect_host().await?;
    let gateway: std::net::IpAddr = crate::class::console::gateway(&host_engine, &args.name)
        .await?
        .parse()
        .map_err(|_| Error::failed("the class network's gateway is not an IP address"))?;
    let deploys = bind(SocketAddr::new(gateway, crate::class::console::DEPLOY_PORT)).await?;
    let address = listener.local_addr().unwrap_or(args.listen);
    let host = args
        .public_host
        .clone()
        .unwrap_or_else(|| address.ip().to_string());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = format!("{scheme}://{}:{}", bracketed(&host), address.port());
    let app = web::app(web::Setup {
        class: args.name.clone(),
        base_url: base_url.clone(),
        fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
        assets,
        ui: ui.clone(),
    })
    .await?;
    if !loopback && tls.is_none() {
        ui.warn(format!(
            "--insecure-plain-http on {}: every learner's token and keystrokes cross the network in clear",
            args.listen
        ));
    }
    print_links(&class, &base_url, Output::Table);
    if let Some(tls) = &tls {
        println!("tls    SHA-256 {}", tls.fingerprint);
    }
    ui.detail("serving; Ctrl-C stops serving and leaves the labs as they are");
    tokio::select! {
        result = web::serve(listener, deploys, app, tls.map(|t| t.acceptor)) => result,
        () = interrupted() => Ok(()),
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            Error::usage(format!(
                "{address} is in use: pick another with --listen (port 0 takes any free port)"
            ))
        } else {
            Error::failed(format!("cannot listen on {address}: {err}"))
        }
    })
}
