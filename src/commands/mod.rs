//! One module per subcommand; each parses nothing and prints its data to
//! stdout, its progress to stderr.

pub mod bench;
pub mod class;
pub mod completion;
pub mod create;
pub mod deploy;
pub mod destroy;
pub mod doctor;
pub mod env;
pub mod exec;
pub mod lifecycle;
pub mod logs;
pub mod prepare;
pub mod scale;
pub mod status;
pub mod viz;

use crate::cli::{Cli, Command};
use crate::error::{Error, Result};
use crate::ui::Ui;

/// A running lab: its files, its state, and its first manager's engine.
pub struct OpenLab {
    pub dir: crate::lab::state::LabDir,
    pub state: crate::lab::state::LabState,
    pub manager: bollard::Docker,
}

pub async fn open_lab(name: &str) -> Result<OpenLab> {
    crate::lab::name::validate(name)?;
    let dir = crate::lab::state::LabDir::new(name);
    let state = dir.load()?;
    if state.stopped {
        return Err(Error::LabStopped(state.name));
    }
    let leader = state.leader()?;
    let manager =
        match crate::docker::connect_node(&leader.docker_host(), &dir.client_certs()).await {
            Ok(manager) => manager,
            // Stopped behind goblog-lab's back (`docker stop`, a reboot): the
            // machine's own state says so better than an unreachable engine.
            Err(unreachable @ Error::NoDaemon { .. }) => {
                let quiet = Ui::new(true, false);
                let provider = crate::provider::for_lab(&state, &dir, &quiet).await?;
                return Err(match provider.ensure_running(leader).await {
                    Err(Error::NodeStopped { .. }) => Error::LabStopped(state.name),
                    _ => unreachable,
                });
            }
            Err(other) => return Err(other),
        };
    Ok(OpenLab {
        dir,
        state,
        manager,
    })
}

pub async fn run(cli: Cli) -> Result<()> {
    let ui = Ui::new(cli.quiet, cli.verbose);
    match cli.command {
        Command::Create(args) => create::run(args, &ui).await,
        Command::Doctor(args) => doctor::run(&args).await,
        Command::Prepare(args) => prepare::run(&args, &ui).await,
        Command::Env(args) => env::run(&args),
        Command::Status(args) => status::run(&args).await,
        Command::Ls(args) => status::ls(&args).await,
        Command::Deploy(args) => deploy::run(&args, &ui).await,
        Command::Scale(args) => scale::run(&args, &ui).await,
        Command::Logs(args) => logs::run(&args).await,
        Command::Viz(args) => viz::run(&args, &ui).await,
        Command::Class(args) => class::run(args, &ui).await,
        Command::Bench(args) => bench::run(&args, &ui).await,
        Command::Exec(args) => exec::exec(&args, &ui).await,
        Command::Shell(args) => exec::shell(&args, &ui).await,
        Command::Stop(args) => lifecycle::stop(&args, &ui).await,
        Command::Start(args) => lifecycle::start(&args, &ui).await,
        Command::Destroy(args) => destroy::run(&args, &ui).await,
        Command::Completion(args) => completion::run(&args),
    }
}
