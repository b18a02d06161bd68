//! The learner's terminal: a WebSocket from xterm.js to a TTY exec of
//! `bash -l` in their console, through the host engine's API.
//!
//! The page sends text frames of JSON, `{"input": "..."}` for keystrokes
//! and `{"resize": {"cols": C, "rows": R}}` when its size changes; the
//! server sends the TTY's bytes back as binary frames, as they come.

use axum::extract::ws::{Message, WebSocket};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::class::console;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum FromPage {
    Input(String),
    Resize { cols: u16, rows: u16 },
}

/// Serves one terminal until the page or the shell goes away.
pub async fn run(socket: WebSocket, host: &Docker, class: &str, number: u32) {
    let (mut to_page, mut from_page) = socket.split();
    let name = console::container_name(class, number);
    let started = start_shell(host, &name).await;
    let (exec_id, mut output, mut input) = match started {
        Ok(started) => started,
        Err(err) => {
            let line = format!("\r\n\x1b[31m{err}\x1b[0m\r\n");
            let _ = to_page
                .send(Message::Binary(line.into_bytes().into()))
                .await;
            let _ = to_page.close().await;
            return;
        }
    };
    let to_shell = async {
        while let Some(Ok(message)) = from_page.next().await {
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => break,
                _ => continue,
            };
            match serde_json::from_str::<FromPage>(&text) {
                Ok(FromPage::Input(keys)) => {
                    if input.write_all(keys.as_bytes()).await.is_err() {
                        break;
                    }
                    let _ = input.flush().await;
                }
                Ok(FromPage::Resize { cols, rows }) if cols > 0 && rows > 0 => {
                    let size = bollard::query_parameters::ResizeExecOptionsBuilder::default()
                        .w(i32::from(cols))
                        .h(i32::from(rows))
                        .build();
                    let _ = host.resize_exec(&exec_id, size).await;
                }
                _ => {}
            }
        }
    };
    let to_page_done = async {
        while let Some(Ok(chunk)) = output.next().await {
            let bytes = chunk.into_bytes();
            if to_page.send(Message::Binary(bytes)).await.is_err() {
                return;
            }
        }
        let _ = to_page
            .send(Message::Binary(
                b"\r\n[the shell ended; reload the page for a new one]\r\n"
                    .to_vec()
                    .into(),
            ))
            .await;
        let _ = to_page.close().await;
    };
    tokio::select! {
        () = to_shell => {}
        () = to_page_done => {}
    }
}

type Output = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;
type Input = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

async fn start_shell(
    host: &Docker,
    container: &str,
) -> crate::error::Result<(String, Output, Input)> {
    let running = host
        .inspect_container(container, None)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.running)
        .unwrap_or(false);
    if !running {
        return Err(crate::error::Error::failed(format!(
            "the console {container} is not running; ask your instructor to reset your lab"
        )));
    }
    let exec = host
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["bash".to_string(), "-l".to_string()]),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(true),
                env: Some(vec!["TERM=xterm-256color".to_string()]),
                working_dir: Some(console::HOME.to_string()),
                ..Default::default()
            },
        )
        .await
        .map_err(|err| {
            crate::error::Error::failed(format!("starting a shell in {container}: {err}"))
        })?;
    match host
        .start_exec(
            &exec.id,
            Some(bollard::exec::StartExecOptions {
                detach: false,
                tty: true,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|err| {
            crate::error::Error::failed(format!("attaching to a shell in {container}: {err}"))
        })? {
        StartExecResults::Attached { output, input } => Ok((exec.id, output, input)),
        StartExecResults::Detached => {
            Err(crate::error::Error::failed("the shell started detached"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_speaks_input_and_resize() {
        assert_eq!(
            serde_json::from_str::<FromPage>(r#"{"input":"ls\r"}"#).unwrap(),
            FromPage::Input("ls\r".into())
        );
        assert_eq!(
            serde_json::from_str::<FromPage>(r#"{"resize":{"cols":120,"rows":40}}"#).unwrap(),
            FromPage::Resize {
                cols: 120,
                rows: 40
            }
        );
        assert!(serde_json::from_str::<FromPage>(r#"{"other":1}"#).is_err());
    }
}
