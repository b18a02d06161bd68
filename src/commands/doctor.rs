//! `goblog-lab doctor`: whether this machine can run a lab, one finding a
//! line, before anything is made. The checks are `crate::preflight`'s;
//! this prints them.

use std::io::IsTerminal;

use serde::Serialize;

use crate::cli::{DoctorArgs, Output};
use crate::error::Result;
use crate::preflight::{self, Finding, Status};

#[derive(Serialize)]
struct Report<'a> {
    ready: bool,
    findings: &'a [Finding],
    /// The first blocking reason, the line `create` would stop with.
    #[serde(skip_serializing_if = "Option::is_none")]
    blocking: Option<String>,
}

pub async fn run(args: &DoctorArgs) -> Result<()> {
    let (facts, engine_error) = match crate::docker::connect_host().await {
        Ok(docker) => (Some(preflight::engine_facts(&docker).await), None),
        Err(err) => (None, Some(err)),
    };
    let host = preflight::host_facts(facts.as_ref(), true).await;
    let engine = match (&facts, engine_error) {
        (Some(facts), _) => Ok(facts),
        (None, Some(err)) => Err(err),
        (None, None) => unreachable!("an engine or its error"),
    };
    let mut findings = preflight::judge_all(engine, &host);
    let blocking = preflight::first_blocking(&mut findings);
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Report {
                ready: blocking.is_none(),
                findings: &findings,
                blocking: blocking.as_ref().map(ToString::to_string),
            })
            .expect("the report serialises")
        ),
        Output::Table => print_table(&findings, blocking.is_none()),
    }
    match blocking {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn print_table(findings: &[Finding], ready: bool) {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let width = findings.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for finding in findings {
        let status = format!("{:<8}", finding.status.as_str());
        let status = if colour {
            let code = match finding.status {
                Status::Ok => "32",
                Status::Warn => "33",
                Status::Blocking => "31;1",
            };
            format!("\x1b[{code}m{status}\x1b[0m")
        } else {
            status
        };
        println!(
            "{status} {:<width$}  {} → {}",
            finding.name, finding.found, finding.action
        );
    }
    println!();
    if ready {
        println!("Ready: `goblog-lab create` will work here.");
    } else {
        println!("Not ready: `goblog-lab create` would stop on the first blocking finding:");
    }
}
