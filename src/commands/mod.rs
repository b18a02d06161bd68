//! One module per subcommand; each parses nothing and prints its data to
//! stdout, its progress to stderr.

pub mod create;
pub mod destroy;
pub mod env;
pub mod lifecycle;
pub mod status;

use crate::cli::{Cli, Command};
use crate::error::Result;
use crate::ui::Ui;

pub async fn run(cli: Cli) -> Result<()> {
    let ui = Ui::new(cli.quiet, cli.verbose);
    match cli.command {
        Command::Create(args) => create::run(args, &ui).await,
        Command::Env(args) => env::run(&args),
        Command::Status(args) => status::run(&args).await,
        Command::Ls(args) => status::ls(&args).await,
        Command::Stop(args) => lifecycle::stop(&args, &ui).await,
        Command::Start(args) => lifecycle::start(&args, &ui).await,
        Command::Destroy(args) => destroy::run(&args, &ui).await,
    }
}
