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
use crate::error::Result;
use crate::ui::Ui;

pub use crate::open::{open_lab, OpenLab};

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
