//! `goblog-lab viz`: serves the live picture of the lab's Swarm on
//! loopback until Ctrl-C.

use std::net::{IpAddr, SocketAddr};

use crate::cli::VizArgs;
use crate::commands::create::interrupted;
use crate::commands::open_lab;
use crate::error::{Error, Result};
use crate::ui::Ui;
use crate::viz::poll::{empty_state, Poller};
use crate::viz::server::{serve, Hub};

pub async fn run(args: &VizArgs, ui: &Ui) -> Result<()> {
    let lab = open_lab(&args.name).await?;
    let listener = bind(args.address, args.port).await?;
    let url = match listener.local_addr() {
        Ok(address) => format!("http://{address}/"),
        Err(_) => format!("http://{}:{}/", args.address, args.port),
    };
    let address = lab.state.manager_ip()?.to_string();
    let mut poller = Poller::new(lab.manager.clone(), &address, &lab.state);
    let hub = Hub::new(empty_state(&lab.state.name, &address));
    // The first picture is there before the first page asks for it.
    hub.publish(poller.snapshot().await);

    println!("Visualizer of lab '{}': {url}", lab.state.name);
    if !args.address.is_loopback() {
        ui.warn(format!(
            "--address {}: the lab's nodes, services and tasks can be read from other machines",
            args.address
        ));
    }
    if args.open {
        open_browser(&url, ui);
    }
    ui.detail("polling the manager every second; Ctrl-C stops");
    tokio::select! {
        () = serve(listener, hub.clone()) => {}
        () = poller.run(&hub) => {}
        () = interrupted() => {}
    }
    Ok(())
}

async fn bind(address: IpAddr, port: u16) -> Result<tokio::net::TcpListener> {
    let socket = SocketAddr::new(address, port);
    tokio::net::TcpListener::bind(socket).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            Error::failed(format!(
                "port {port} on {address} is in use; pick another with --port (0 takes any free port)"
            ))
        } else {
            Error::failed(format!("cannot listen on {socket}: {err}"))
        }
    })
}

/// Best effort: a machine without a desktop still has the URL printed.
fn open_browser(url: &str, ui: &Ui) {
    let opener = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "xdg-open".into());
    let spawned = std::process::Command::new(&opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        ui.warn(format!(
            "--open: could not run {opener}; open {url} yourself"
        ));
    }
}
