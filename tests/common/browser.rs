//! Headless Chromium (Debian's), driven through chromedriver by fantoccini,
//! for the tests that look at a page the way a person does: the visualizer
//! and the bench report.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::wait_until;

/// chromedriver on a free port, stopped with the test.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
}

impl ChromeDriver {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (.ci/run installs Debian's chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        ChromeDriver { child, url }
    }

    /// A headless Chromium window of `width`×`height`, with a fresh profile
    /// of its own (`profile` under the tests' tmp dir) so no earlier run's
    /// cache shows.
    pub async fn session(&self, profile: &str, width: u32, height: u32) -> fantoccini::Client {
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR")).join(profile);
        let _ = std::fs::remove_dir_all(&profile);
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let page = fantoccini::ClientBuilder::native()
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver");
        // Headless Chromium keeps room for a toolbar it does not draw: grow
        // the window by that much, so the page (and a screenshot) gets
        // exactly width×height.
        let inner = page
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .expect("the page runs the script");
        let (outer_w, outer_h) = page.get_window_size().await.expect("the window's size");
        let grow = |outer: u64, want: u32, inner: &serde_json::Value| {
            (outer + u64::from(want)).saturating_sub(inner.as_u64().unwrap_or(u64::from(want)))
                as u32
        };
        page.set_window_size(
            grow(outer_w, width, &inner[0]),
            grow(outer_h, height, &inner[1]),
        )
        .await
        .expect("the window resizes");
        page
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Saves what the window shows as `docs/NAME`, for the README and docs/.
pub async fn screenshot_to_docs(page: &fantoccini::Client, name: &str) {
    let png = page.screenshot().await.expect("a screenshot");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join(name), png).unwrap();
}
