//! One module per subcommand; each parses nothing and prints its data to
//! stdout, its progress to stderr.

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
use crate::error::Result;
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
    let leader = state.leader()?;
    let manager = crate::docker::connect_node(&leader.docker_host(), &dir.client_certs()).await?;
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
        Command::Exec(args) => exec::exec(&args, &ui).await,
        Command::Shell(args) => exec::shell(&args, &ui).await,
        Command::Stop(args) => lifecycle::stop(&args, &ui).await,
        Command::Start(args) => lifecycle::start(&args, &ui).await,
        Command::Destroy(args) => destroy::run(&args, &ui).await,
    }
}
