//! A learner's `deploy`, from their console: the console's script POSTs
//! to `/deploy/SERVICE` on the class network's gateway with the learner's
//! token; the server copies `~/accountservice` out of that learner's
//! console into their workspace, builds it there with the checkout's
//! build cache (shared by the class, so dependencies compile once), and
//! rolls it out to that learner's lab only, as `goblog-lab deploy` does.
//! The response streams the deploy's lines as they come, then
//! `GOBLOG-EXIT 0` or `GOBLOG-EXIT 1`, which the script turns into its
//! exit status.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::App;
use crate::class::console;
use crate::class::state::Learner;
use crate::error::{Error, Result};
use crate::ui::Ui;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/deploy/{service}", post(deploy))
        .fallback(super::not_found)
        .with_state(app)
}

async fn deploy(
    State(app): State<Arc<App>>,
    UrlPath(service): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some((_, learner)) = app.learner(offered) else {
        return super::not_found().await;
    };
    if !app.deploying.lock().unwrap().insert(learner.number) {
        return (
            StatusCode::CONFLICT,
            "deploy: one of yours is running already; wait for it\nGOBLOG-EXIT 1\n",
        )
            .into_response();
    }
    let (lines, received) = mpsc::unbounded_channel::<String>();
    let sink = {
        let lines = lines.clone();
        move |line: &str| {
            let _ = lines.send(format!("{line}\n"));
        }
    };
    let ui = Ui::to_sink(Arc::new(sink), false);
    let worker = app.clone();
    tokio::spawn(async move {
        let outcome = run(&worker, &learner, &service, &ui).await;
        let last = match &outcome {
            Ok(line) => format!("{line}\nGOBLOG-EXIT 0\n"),
            // A learner has no other way to see why their edit did not
            // build: cargo's whole report first, its paths relative to
            // the home where their source lives.
            Err(err @ Error::ServiceBuild { diagnostics, .. }) => {
                format!("{diagnostics}\ndeploy: {err}\nGOBLOG-EXIT 1\n")
            }
            Err(err) => format!("deploy: {err}\nGOBLOG-EXIT 1\n"),
        };
        let _ = lines.send(last);
        worker.deploying.lock().unwrap().remove(&learner.number);
        match outcome {
            Ok(line) => worker.ui.info(format!("{}: {line}", learner.name)),
            Err(err) => worker
                .ui
                .warn(format!("{}'s deploy failed: {err}", learner.name)),
        }
    });
    let stream = futures_util::stream::unfold(received, |mut received| async move {
        let line = received.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(line)),
            received,
        ))
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream.boxed()),
    )
        .into_response()
}

/// Copies the learner's source in, builds and rolls out; returns the line
/// that says what runs now.
async fn run(app: &App, learner: &Learner, service: &str, ui: &Ui) -> Result<String> {
    let mut lab = crate::open::open_lab(&learner.lab).await?;
    let workspace = lab.state.project_root.clone().ok_or_else(|| {
        Error::failed(format!(
            "lab '{}' records no workspace to build from",
            learner.lab
        ))
    })?;
    let step = ui.step("Copying ~/accountservice from your console 📋");
    copy_source(app, learner, &workspace).await?;
    step.done();
    let targets = crate::redeploy::targets(&lab.state, Some(service))?;
    let checkout = crate::lab::spec::load(None)?.project_root;
    let cache = crate::steps::images::target_dir(&checkout);
    let mut last = String::new();
    for (name, build) in targets {
        let deployed = crate::redeploy::service(
            &app.host, &mut lab, &workspace, &cache, &name, &build, None, ui,
        )
        .await?;
        last = if deployed.changed {
            format!(
                "{} {} is serving on {} replica(s) of your lab, {:.1} s after you asked",
                deployed.service, deployed.to, deployed.replicas, deployed.seconds.serving
            )
        } else {
            format!(
                "{} is up to date ({}): nothing to deploy",
                deployed.service, deployed.to
            )
        };
    }
    crate::class::run::deployed_now(&app.class, learner.number)?;
    Ok(last)
}

/// `~/accountservice` of the learner's console, over their workspace's.
async fn copy_source(app: &App, learner: &Learner, workspace: &std::path::Path) -> Result<()> {
    let container = console::container_name(&app.class, learner.number);
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
        .path(&format!("{}/accountservice", console::HOME))
        .build();
    let mut stream = app.host.download_from_container(&container, Some(options));
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            Error::failed(format!(
                "copying ~/accountservice out of {container}: {err}"
            ))
        })?;
        tar.extend_from_slice(&chunk);
    }
    let target = workspace.join("accountservice");
    let _ = std::fs::remove_dir_all(target.join("src"));
    // The tar's entries start with `accountservice/`; the tar crate refuses
    // any that would land outside `workspace`.
    // Stamped now, not with the console's times: cargo judges a path
    // package fresh by mtime, so a file put back older than the last build
    // would be skipped.
    let mut archive = tar::Archive::new(tar.as_slice());
    archive.set_preserve_mtime(false);
    archive.unpack(workspace).map_err(|err| {
        Error::failed(format!(
            "unpacking your source into {}: {err}",
            workspace.display()
        ))
    })?;
    // The learner's Cargo.toml came with it: its version is theirs again.
    crate::class::run::stamp_version(workspace, &app.class, learner.number)
}
