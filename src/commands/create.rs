//! `goblog-lab create`: the command line of [`crate::create`]. It maps
//! the flags onto the lab file (`lab::overrides`, where the rules of which
//! flag goes with which driver live), makes the lab, and prints the
//! summary: text for people, `-o json` for scripts.

use std::time::Duration;

use crate::cli::{CreateArgs, Output, PublishChoice};
use crate::create::{self, plural, Options, Request, Summary};
use crate::error::Result;
use crate::lab::name;
use crate::lab::overrides::{self, Overrides};
use crate::lab::spec;
use crate::lab::state::{Publish, Routing};
use crate::provider::Choices;
use crate::ui::{seconds, Ui};

pub async fn run(args: CreateArgs, ui: &Ui) -> Result<()> {
    name::validate(&args.name)?;
    let mut loaded = spec::load(args.file.as_deref())?;
    overrides::apply(&mut loaded.spec, &overrides_of(&args))?;
    let request = Request {
        name: args.name.clone(),
        loaded,
        options: Options {
            retain: args.retain,
            no_deploy: args.no_deploy,
            routing: args.routing,
            install_docker: args.install_docker,
            machines: Choices {
                publish: args.publish.forced(),
                accept_new_host_keys: args.accept_new_host_keys,
            },
        },
    };
    let created = create::create(request, ui, interrupted()).await?;
    print_summary(&created.summary, args.output);
    Ok(())
}

/// The flags that change the lab file, as the model's overrides.
fn overrides_of(args: &CreateArgs) -> Overrides {
    Overrides {
        driver: args.driver,
        workers: args.workers,
        managers: args.managers,
        registry_port: args.registry_port,
        ssh_managers: args.ssh_managers.clone(),
        ssh_workers: args.ssh_workers.clone(),
        ssh_key: args.ssh_key.clone(),
        vip: args.vip,
        machines: args.machines.clone(),
        memory: args.memory,
        publish_localhost: args.publish == PublishChoice::Localhost,
        adopting_flags: args.install_docker || args.accept_new_host_keys,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("signal handlers install");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_summary(summary: &Summary, output: Output) {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).expect("summary serialises")
        );
        return;
    }
    let routing = match summary.routing {
        Routing::Mesh => "Swarm routing mesh",
        Routing::Edge => "edge proxy on every manager",
    };
    let routing = format!("{routing}: {}", summary.routing_why);
    let flag = if summary.name == name::DEFAULT {
        String::new()
    } else {
        format!(" --name {}", summary.name)
    };
    println!();
    println!(
        "Lab '{}' is ready in {}: {} manager{}, {} worker{}.",
        summary.name,
        seconds(Duration::from_secs_f64(summary.seconds)),
        summary.managers,
        plural(summary.managers),
        summary.workers,
        plural(summary.workers)
    );
    println!();
    if summary.manager_ip_moves {
        println!(
            "  ManagerIP  {} (virtual: keepalived moves it to a healthy manager within about a second)",
            summary.manager_ip
        );
    } else {
        println!("  ManagerIP  {}", summary.manager_ip);
    }
    println!(
        "  registry   {} (TLS with the lab CA; push with the `docker` of `goblog-lab env`)",
        summary.registry
    );
    println!("  routing    {routing}");
    if summary.publish == Publish::Localhost {
        println!("  published  on 127.0.0.1 only (--publish localhost):");
        for e in &summary.endpoints {
            println!("               {:<16} {}", e.node, e.describe());
        }
    }
    if let Some(accel) = &summary.accel {
        println!(
            "  VMs        {}",
            if accel == "kvm" {
                "KVM"
            } else {
                "TCG, software emulation (no working KVM here): expect minutes, not seconds"
            }
        );
    }
    for skipped in &summary.skipped {
        println!("  skipped    {} ({})", skipped.name, skipped.reason);
    }
    for service in &summary.services {
        let seen = if service.served_by.is_empty() {
            String::new()
        } else {
            format!(", answered from {}", service.served_by.join(", "))
        };
        println!(
            "  service    {} ({} replica{}{seen})",
            service.name,
            service.replicas,
            plural(service.replicas as u32)
        );
    }
    println!();
    println!("Point your shell at it:");
    println!("  eval \"$(goblog-lab env{flag})\"");
    println!("  docker node ls");
    if let Some(url) = summary.services.iter().find_map(|s| s.url.as_ref()) {
        let path = url.splitn(4, '/').nth(3).unwrap_or("");
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .unwrap_or("6767");
        println!("  curl $ManagerIP:{port}/{path}");
    }
    println!("When done:");
    println!("  goblog-lab destroy{flag}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn create_args(args: &[&str]) -> CreateArgs {
        let cli = Cli::try_parse_from([&["goblog-lab", "create"], args].concat()).unwrap();
        match cli.command {
            Command::Create(args) => args,
            _ => unreachable!("parsed as create"),
        }
    }

    #[test]
    fn every_flag_that_changes_the_lab_file_reaches_the_overrides() {
        let flags = overrides_of(&create_args(&[
            "--driver",
            "ssh",
            "--manager",
            "root@a",
            "--worker",
            "root@b:2222",
            "--ssh-key",
            "/k",
            "--accept-new-host-keys",
            "--registry-port",
            "0",
        ]));
        assert_eq!(flags.driver.map(|kind| kind.as_str()), Some("ssh"));
        assert_eq!(flags.ssh_managers, ["root@a"]);
        assert_eq!(flags.ssh_workers, ["root@b:2222"]);
        assert_eq!(flags.ssh_key, Some("/k".into()));
        assert_eq!(flags.registry_port, Some(0));
        assert!(flags.adopting_flags && !flags.publish_localhost);

        let flags = overrides_of(&create_args(&[
            "--workers",
            "3",
            "--managers",
            "3",
            "--publish",
            "localhost",
        ]));
        assert_eq!((flags.workers, flags.managers), (Some(3), Some(3)));
        assert!(flags.publish_localhost && !flags.adopting_flags);
        assert_eq!(overrides_of(&create_args(&[])), Overrides::default());
    }
}
