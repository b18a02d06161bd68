//! `goblog-lab env`: the lab's answer to `docker-machine env`.
//!
//! It prints only shell code on stdout, so `eval "$(goblog-lab env)"` is
//! safe; the variables point the user's own `docker` CLI at the first
//! manager over TLS and set `ManagerIP` for the tutorial's `curl` lines.
//! In localhost mode both are 127.0.0.1 and the ports published there.

use crate::cli::{EnvArgs, Shell};
use crate::error::{Error, Result};
use crate::lab::name;
use crate::lab::state::LabDir;

/// The variables, in the order docker-machine printed them, then ours.
pub fn variables(
    lab: &str,
    manager_ip: &str,
    docker_host: &str,
    cert_path: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("DOCKER_TLS_VERIFY", "1".to_string()),
        ("DOCKER_HOST", docker_host.to_string()),
        ("DOCKER_CERT_PATH", cert_path.to_string()),
        ("GOBLOG_LAB_NAME", lab.to_string()),
        ("ManagerIP", manager_ip.to_string()),
    ]
}

const NAMES: [&str; 5] = [
    "DOCKER_TLS_VERIFY",
    "DOCKER_HOST",
    "DOCKER_CERT_PATH",
    "GOBLOG_LAB_NAME",
    "ManagerIP",
];

pub fn render(shell: Shell, vars: &[(&str, String)], lab: &str) -> String {
    let mut out = String::new();
    for (key, value) in vars {
        out += &match shell {
            Shell::Bash | Shell::Zsh => format!("export {key}=\"{}\"\n", escape_posix(value)),
            Shell::Fish => format!("set -gx {key} \"{}\";\n", escape_posix(value)),
            Shell::Powershell => format!(
                "$Env:{key} = \"{}\"\n",
                value.replace('`', "``").replace('"', "`\"")
            ),
        };
    }
    out + &hint(shell, &format!("goblog-lab env{}", name_flag(lab)))
}

pub fn render_unset(shell: Shell) -> String {
    let mut out = String::new();
    for key in NAMES {
        out += &match shell {
            Shell::Bash | Shell::Zsh => format!("unset {key}\n"),
            Shell::Fish => format!("set -e {key};\n"),
            Shell::Powershell => format!("Remove-Item Env:\\{key} -ErrorAction SilentlyContinue\n"),
        };
    }
    out + &hint(shell, "goblog-lab env --unset")
}

fn name_flag(lab: &str) -> String {
    if lab == name::DEFAULT {
        String::new()
    } else {
        format!(" --name {lab}")
    }
}

fn hint(shell: Shell, command: &str) -> String {
    let run = match shell {
        Shell::Bash | Shell::Zsh => format!("eval \"$({command})\""),
        Shell::Fish => format!("eval ({command} --shell fish)"),
        Shell::Powershell => format!("& {command} --shell powershell | Invoke-Expression"),
    };
    format!("# Run this command to configure your shell:\n# {run}\n")
}

fn escape_posix(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$")
        .replace('`', "\\`")
}

fn default_shell() -> Shell {
    let shell = std::env::var("SHELL").unwrap_or_default();
    match shell.rsplit('/').next() {
        Some("fish") => Shell::Fish,
        Some("zsh") => Shell::Zsh,
        Some("pwsh") | Some("powershell") => Shell::Powershell,
        _ => Shell::Bash,
    }
}

pub fn run(args: &EnvArgs) -> Result<()> {
    let shell = args.shell.unwrap_or_else(default_shell);
    if args.unset {
        print!("{}", render_unset(shell));
        return Ok(());
    }
    name::validate(&args.name)?;
    let dir = LabDir::new(&args.name);
    let state = dir.load()?;
    if state.stopped {
        // docker-machine's `env` refuses a stopped machine too: exports
        // pointing at an engine that is down only move the error later.
        return Err(Error::LabStopped(state.name));
    }
    // With a virtual $ManagerIP both follow whichever manager holds it.
    let vars = variables(
        &state.name,
        &state.manager_ip()?.to_string(),
        &state.docker_host()?,
        &dir.client_certs().display().to_string(),
    );
    print!("{}", render(shell, &vars, &state.name));
    // Not shell code, so not on stdout: a port that could not keep its
    // number on this host is said where the user sees it.
    for line in moved_ports(&state) {
        eprintln!("# {line}");
    }
    Ok(())
}

/// Services whose port is published on 127.0.0.1 under another number,
/// because theirs was taken on this host.
fn moved_ports(state: &crate::lab::state::LabState) -> Vec<String> {
    state
        .endpoints()
        .into_iter()
        .filter(|e| e.what != "docker" && e.what != "registry")
        .filter(|e| !e.reached_at.ends_with(&format!(":{}", e.port)))
        .map(|e| {
            let local = e.reached_at.rsplit(':').next().unwrap_or_default();
            format!(
                "{} {} was taken on this host: it is $ManagerIP:{local} here (curl $ManagerIP:{local}/...)",
                e.what, e.port
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, String)> {
        variables(
            "goblog",
            "172.28.0.10",
            "tcp://172.28.0.10:2376",
            "/home/u/.local/share/goblog-lab/labs/goblog/certs",
        )
    }

    #[test]
    fn bash_matches_docker_machine() {
        let text = render(Shell::Bash, &vars(), "goblog");
        assert_eq!(
            text,
            "export DOCKER_TLS_VERIFY=\"1\"\n\
             export DOCKER_HOST=\"tcp://172.28.0.10:2376\"\n\
             export DOCKER_CERT_PATH=\"/home/u/.local/share/goblog-lab/labs/goblog/certs\"\n\
             export GOBLOG_LAB_NAME=\"goblog\"\n\
             export ManagerIP=\"172.28.0.10\"\n\
             # Run this command to configure your shell:\n\
             # eval \"$(goblog-lab env)\"\n"
        );
    }

    #[test]
    fn zsh_is_posix_too_and_names_the_lab() {
        let text = render(Shell::Zsh, &vars(), "day2");
        assert!(text.contains("export ManagerIP=\"172.28.0.10\"\n"));
        assert!(text.ends_with("# eval \"$(goblog-lab env --name day2)\"\n"));
    }

    #[test]
    fn fish_uses_set_gx() {
        let text = render(Shell::Fish, &vars(), "goblog");
        assert!(text.starts_with("set -gx DOCKER_TLS_VERIFY \"1\";\n"));
        assert!(text.ends_with("# eval (goblog-lab env --shell fish)\n"));
    }

    #[test]
    fn powershell_sets_env_drive() {
        let text = render(Shell::Powershell, &vars(), "goblog");
        assert!(text.contains("$Env:DOCKER_HOST = \"tcp://172.28.0.10:2376\"\n"));
        assert!(text.ends_with("# & goblog-lab env --shell powershell | Invoke-Expression\n"));
    }

    #[test]
    fn unset_covers_every_variable_in_each_shell() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Powershell] {
            let text = render_unset(shell);
            for name in NAMES {
                assert!(text.contains(name), "{shell:?} {name}");
            }
            assert!(text.contains("# Run this command to configure your shell:"));
        }
        assert!(render_unset(Shell::Bash).starts_with("unset DOCKER_TLS_VERIFY\n"));
    }

    #[test]
    fn values_are_quoted_against_the_shell() {
        let vars = vec![("DOCKER_CERT_PATH", "/tmp/a \"b\" $HOME `x`".to_string())];
        let text = render(Shell::Bash, &vars, "goblog");
        assert!(
            text.starts_with("export DOCKER_CERT_PATH=\"/tmp/a \\\"b\\\" \\$HOME \\`x\\`\"\n"),
            "{text}"
        );
    }
}
