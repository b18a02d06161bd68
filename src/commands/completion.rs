//! `goblog-lab completion SHELL`: the script a shell sources so that Tab
//! completes subcommands, flags, and the names of the labs on this machine,
//! as `kind completion`, `k3d completion` and `minikube completion` do.
//!
//! The script holds no grammar. At each Tab the shell runs goblog-lab again
//! with [`VAR`] set (clap_complete's dynamic engine, `CompleteEnv` in
//! `main.rs`), so the candidates come from the binary that is installed and
//! the lab names from the lab home as it is at that moment.

use std::io::Write;

use crate::cli::CompletionArgs;
use crate::error::{Error, Result};

/// The variable that turns a run of goblog-lab into a completion request.
pub const VAR: &str = "GOBLOG_LAB_COMPLETE";

pub fn run(args: &CompletionArgs) -> Result<()> {
    let shells = clap_complete::env::Shells::builtins();
    let value = clap::ValueEnum::to_possible_value(&args.shell).expect("no shell is skipped");
    let name = value.get_name();
    let shell = shells
        .completer(name)
        .ok_or_else(|| Error::failed(format!("clap_complete has no completer for {name}")))?;
    // The binary as it runs now, so completion works before it is on PATH
    // (`cargo run --release -- completion bash` leaves it in target/).
    let completer = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "goblog-lab".into());
    let mut out = std::io::stdout().lock();
    shell
        .write_registration(VAR, "goblog-lab", "goblog-lab", &completer, &mut out)
        .and_then(|()| out.flush())
        .map_err(|err| Error::failed(format!("writing the completion script: {err}")))
}
