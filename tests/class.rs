//! `goblog-lab class` against the real engine and headless Chromium: a
//! class of three labs, each learner's page with a working terminal into
//! their own console, tokens refused on every path that is not theirs,
//! the board with a reset, the cards printed to PDF, and nothing left
//! after `class destroy`. Plus the refusals, and Ctrl-C mid-create.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use browser::{screenshot_to_docs, ChromeDriver};
use common::*;

/// `class serve` on a free loopback port, killed when dropped; its links.
struct Serve {
    child: Child,
    port: u16,
    learners: Vec<String>,
    board: String,
    cards: String,
}

impl Serve {
    fn start(class: &str) -> Self {
        let mut child = goblog_lab(&["class", "serve", "--name", class, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut learners, mut board, mut cards) = (Vec::new(), String::new(), String::new());
        for line in lines.by_ref() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first() {
                Some(w) if w.starts_with("learner-") => learners.push(words[3].to_string()),
                Some(&"board") => board = words[1].to_string(),
                Some(&"cards") => {
                    cards = words[1].to_string();
                    break;
                }
                _ => {}
            }
        }
        let port = board
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("serve prints the board's link: {board:?}"));
        Serve {
            child,
            port,
            learners,
            board,
            cards,
        }
    }

    /// The stderr it wrote, once stopped.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        let _ = self.child.wait();
        err
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Destroys the class however the test ends.
struct ClassGuard(&'static str);

impl Drop for ClassGuard {
    fn drop(&mut self) {
        let _ = goblog_lab(&["class", "destroy", "--name", self.0]).output();
    }
}

fn path_of(link: &str) -> String {
    let rest = link.splitn(4, '/').nth(3).unwrap_or("");
    format!("/{rest}")
}

/// The status code of the answer to `request`, sent as it is.
fn status_of(port: u16, request: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The status of a WebSocket upgrade request for `path`.
fn upgrade_status(port: u16, path: &str) -> u16 {
    status_of(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    )
}

/// The status of an empty POST to `path`.
fn post_status(port: u16, path: &str) -> u16 {
    status_of(
        port,
        &format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
}

/// Everything on this engine that belongs to `class` or one of its labs.
fn leftovers(class: &str) -> Vec<String> {
    let mut found = Vec::new();
    for kind in ["ps -a", "volume ls", "network ls"] {
        let mut args: Vec<&str> = kind.split(' ').collect();
        args.extend(["--format", "{{.Names}}{{.Name}}"]);
        let listed = docker(&args);
        found.extend(
            stdout(&listed)
                .lines()
                .filter(|n| {
                    n.contains(&format!("-{class}-")) || n.starts_with(&format!("{class}-"))
                })
                .map(str::to_string),
        );
    }
    found
}

/// The terminal's whole buffer, as text.
async fn terminal_text(page: &fantoccini::Client) -> String {
    page.execute(
        "const b = window.term.buffer.active; const out = [];
         for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
         return out.join('\\n');",
        vec![],
    )
    .await
    .unwrap()
    .as_str()
    .unwrap_or("")
    .to_string()
}

async fn wait_for_js(page: &fantoccini::Client, what: &str, within: Duration, script: &str) {
    let deadline = Instant::now() + within;
    loop {
        let value = page.execute(script, vec![]).await.unwrap_or_default();
        if value == serde_json::Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Types `keys` into the page's terminal as a person would, then Enter.
async fn type_line(page: &fantoccini::Client, keys: &str) {
    let input = page
        .find(fantoccini::Locator::Css(".xterm-helper-textarea"))
        .await
        .unwrap();
    input.send_keys(keys).await.unwrap();
    input.send_keys("\u{E007}").await.unwrap();
}

async fn wait_for_terminal(
    page: &fantoccini::Client,
    what: &str,
    within: Duration,
    seen: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = terminal_text(page).await;
        if seen(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the terminal shows:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_class_of_three_in_a_browser_each_learner_in_their_own_lab() {
    const CLASS: &str = "tclass";
    let _guard = ClassGuard(CLASS);
    let made = run(&[
        "class",
        "create",
        "--learners",
        "3",
        "--name",
        CLASS,
        "-o",
        "json",
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&made)).unwrap();
    let learners = doc["learners"].as_array().unwrap();
    assert_eq!(learners.len(), 3);
    assert!(learners.iter().all(|l| l["state"] == "ready"), "{doc}");

    // The same name again is refused in one line, and changes nothing.
    let again = run(&["class", "create", "--learners", "1", "--name", CLASS]);
    assert_one_line_error(&again, 2, "already exists");

    let serve = Serve::start(CLASS);
    assert_eq!(serve.learners.len(), 3);
    let port = serve.port;
    let (a, b) = (path_of(&serve.learners[0]), path_of(&serve.learners[1]));
    let board = path_of(&serve.board);

    // A port in use is one line.
    let taken = run(&[
        "class",
        "serve",
        "--name",
        CLASS,
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_one_line_error(&taken, 2, "is in use");
    // So is a missing xterm asset.
    let no_assets = run(&[
        "class",
        "serve",
        "--name",
        CLASS,
        "--listen",
        "127.0.0.1:0",
        "--assets",
        "/nonexistent",
    ]);
    assert_one_line_error(&no_assets, 2, "xterm");

    // Each token opens its own pages; the info names its own lab.
    let (status, info) = http_get("127.0.0.1", port, &format!("{a}info")).unwrap();
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["lab"], format!("{CLASS}-1"));
    let (status, viz) = http_get("127.0.0.1", port, &format!("{b}viz/api/state")).unwrap();
    assert_eq!(status, 200);
    assert!(viz.contains(&format!("\"lab\": \"{CLASS}-2\"")), "{viz}");
    // The bundle carries that learner's own client certificate.
    let (status, _) = http_get("127.0.0.1", port, &format!("{a}bundle.tar")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(upgrade_status(port, &format!("{a}term")), 101);

    // Learner A's token opens nothing else: not the board, and no path
    // with another token. A token one digit off opens nothing.
    let token_a = a.trim_start_matches("/l/").trim_end_matches('/');
    let token_board = board.trim_start_matches("/b/").trim_end_matches('/');
    let mut near = token_a.to_string();
    near.replace_range(31.., if near.ends_with('0') { "1" } else { "0" });
    for refused in [
        format!("/b/{token_a}/"),
        format!("/b/{token_a}/api/state"),
        format!("/b/{token_a}/cards"),
        format!("/l/{token_board}/"),
        format!("/l/{token_board}/viz/api/state"),
        format!("/l/{token_board}/bundle.tar"),
        format!("/l/{near}/"),
        format!("/l/{near}/bundle.tar"),
        format!("/l/{near}/viz/api/state"),
        format!("/l/{near}/info"),
        "/l/".to_string(),
        "/b/".to_string(),
    ] {
        let (status, _) = http_get("127.0.0.1", port, &refused).unwrap();
        assert_eq!(status, 404, "{refused}");
    }
    assert_eq!(
        post_status(port, &format!("/b/{token_a}/reset/learner-2")),
        404
    );
    assert_eq!(
        post_status(port, &format!("/b/{near}/reset/learner-2")),
        404
    );
    assert_eq!(upgrade_status(port, &format!("/l/{near}/term")), 404);
    assert_eq!(upgrade_status(port, &format!("/l/{token_board}/term")), 404);

    let driver = ChromeDriver::start();
    let page = driver.session("class-learner-profile", 1400, 900).await;
    page.goto(&serve.learners[0]).await.unwrap();
    wait_for_js(
        &page,
        "the terminal's socket to open",
        Duration::from_secs(30),
        "return document.body.dataset.term === 'open';",
    )
    .await;
    wait_for_terminal(&page, "a prompt", Duration::from_secs(30), |t| {
        t.contains("learner-1:")
    })
    .await;
    type_line(&page, "docker node ls").await;
    let text = wait_for_terminal(&page, "three Ready nodes", Duration::from_secs(60), |t| {
        ["swarm-manager-0", "swarm-worker-0", "swarm-worker-1"]
            .iter()
            .all(|n| t.lines().any(|l| l.contains(n) && l.contains("Ready")))
    })
    .await;
    assert!(text.contains("Leader"), "{text}");
    type_line(&page, "curl -s $ManagerIP:6767/accounts/10000; echo").await;
    wait_for_terminal(
        &page,
        "the accountservice's answer",
        Duration::from_secs(60),
        |t| t.contains("\"id\":\"10000\""),
    )
    .await;
    // The learner's own lab: the console's ManagerIP is lab 1's manager.
    type_line(&page, "echo lab=$ManagerIP").await;
    let manager_1 = info["manager_ip"].as_str().unwrap().to_string();
    wait_for_terminal(&page, "ManagerIP", Duration::from_secs(30), |t| {
        t.contains(&format!("lab={manager_1}"))
    })
    .await;
    // An edit in the console, then `deploy` there: built on the server,
    // rolled out to learner 1's lab and no other.
    type_line(
        &page,
        r#"sed -i 's/"status":"UP"}/"status":"UP","build":"learner-1-edit"}/' ~/accountservice/src/routes.rs && deploy; echo deploy-exit=$?"#,
    )
    .await;
    let text = wait_for_terminal(&page, "the deploy to end", Duration::from_secs(600), |t| {
        t.lines()
            .any(|l| l.starts_with("deploy-exit=") && !l.contains('$'))
    })
    .await;
    assert!(text.lines().any(|l| l == "deploy-exit=0"), "{text}");
    assert!(
        text.contains("Building accountservice"),
        "the build's lines reach the terminal: {text}"
    );
    let manager_2 = {
        let (_, info) = http_get("127.0.0.1", port, &format!("{b}info")).unwrap();
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        info["manager_ip"].as_str().unwrap().to_string()
    };
    // A wrapped line is split in the terminal's buffer: read it joined.
    let flat: String = text.lines().collect();
    assert!(
        flat.contains("is serving on"),
        "the deploy rolled out a new image, not 'up to date': {text}"
    );
    // Six answers in a row, each from lab 1 with the edit (the edge proxy
    // spreads them over the replicas); lab 2 never has it.
    wait_until(
        "six answers in a row with the edit from lab 1",
        Duration::from_secs(60),
        || {
            (0..6).all(|_| {
                http_get(&manager_1, 6767, "/health")
                    .is_ok_and(|(status, body)| status == 200 && body.contains("learner-1-edit"))
            })
        },
    );
    for _ in 0..6 {
        let (status, body) = http_get(&manager_2, 6767, "/health").unwrap();
        assert_eq!(status, 200);
        assert!(
            !body.contains("learner-1-edit"),
            "lab 2 got learner 1's edit: {body}"
        );
    }
    wait_for_js(
        &page,
        "the lab's picture beside the terminal",
        Duration::from_secs(30),
        "const f = document.querySelector('iframe'); const d = f && f.contentDocument;
         const v = d && d.querySelector('#viz');
         return !!v && v.textContent.includes('swarm-manager-0');",
    )
    .await;
    screenshot_to_docs(&page, "class-learner.png").await;

    // An edit that does not compile: the learner sees cargo's own report,
    // with the file and line in their home, and their lab keeps serving.
    type_line(
        &page,
        r#"clear; echo 'fn broken( {' >> ~/accountservice/src/routes.rs && deploy; echo broken-exit=$?"#,
    )
    .await;
    let text = wait_for_terminal(
        &page,
        "the broken deploy to end",
        Duration::from_secs(600),
        |t| {
            t.lines()
                .any(|l| l.starts_with("broken-exit=") && !l.contains('$'))
        },
    )
    .await;
    assert!(text.lines().any(|l| l == "broken-exit=1"), "{text}");
    assert!(
        text.contains("--> accountservice/src/routes.rs:"),
        "cargo's report, with the file and line, reaches the terminal: {text}"
    );
    assert!(text.contains("deploy: cargo build of"), "{text}");
    let (status, body) = http_get(&manager_1, 6767, "/health").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("learner-1-edit"), "{body}");

    // The board: three labs ready, learner 1's page open.
    let boardpage = driver.session("class-board-profile", 1400, 900).await;
    boardpage.goto(&serve.board).await.unwrap();
    wait_for_js(
        &boardpage,
        "three ready rows",
        Duration::from_secs(30),
        "return document.querySelectorAll('tr[data-learner][data-state=\"ready\"]').length === 3;",
    )
    .await;
    let (status, state) = http_get("127.0.0.1", port, &format!("{board}api/state")).unwrap();
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let rows = state["learners"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["page_open"], true, "{state}");
    assert_eq!(rows[1]["page_open"], false, "{state}");
    for row in rows {
        assert_eq!(row["nodes_ready"], 3, "{row}");
        assert!(
            row["services"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["answering"] == true),
            "{row}"
        );
    }
    screenshot_to_docs(&boardpage, "class-board.png").await;

    // Reset learner 3 from the board: their lab is made again, the others
    // keep their machines.
    let before_1 = stdout(&docker(&[
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{CLASS}-1-swarm-manager-0"),
    ]));
    let before_3 = stdout(&docker(&[
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{CLASS}-3-swarm-manager-0"),
    ]));
    let reset = boardpage
        .find(fantoccini::Locator::Css(
            "tr[data-learner=\"learner-3\"] button[data-action=\"reset\"]",
        ))
        .await
        .unwrap();
    reset.click().await.unwrap();
    boardpage.accept_alert().await.unwrap();
    // The server's own state says resetting from the POST on; the page
    // follows it, then both say ready once the lab is made again.
    let learner_3 = || {
        let (_, state) = http_get("127.0.0.1", port, &format!("{board}api/state")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        state["learners"][2]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_until(
        "the reset to reach the server",
        Duration::from_secs(10),
        || learner_3() == "resetting",
    );
    wait_for_js(&boardpage, "the board to show learner 3 resetting", Duration::from_secs(10),
        "const r = document.querySelector('tr[data-learner=\"learner-3\"]'); return !!r && r.dataset.state === 'resetting';").await;
    let started = Instant::now();
    wait_until(
        "learner 3's lab made again",
        Duration::from_secs(180),
        || learner_3() == "ready",
    );
    eprintln!(
        "learner 3's reset took {:?} from the board's click",
        started.elapsed()
    );
    wait_for_js(&boardpage, "the board to show learner 3 ready again", Duration::from_secs(10),
        "const r = document.querySelector('tr[data-learner=\"learner-3\"]'); return !!r && r.dataset.state === 'ready';").await;
    let after_1 = stdout(&docker(&[
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{CLASS}-1-swarm-manager-0"),
    ]));
    let after_3 = stdout(&docker(&[
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{CLASS}-3-swarm-manager-0"),
    ]));
    assert_eq!(
        before_1, after_1,
        "learner 1's lab was touched by learner 3's reset"
    );
    assert_ne!(before_3, after_3, "learner 3's lab was not made again");
    let (_, state) = http_get("127.0.0.1", port, &format!("{board}api/state")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert!(
        state["learners"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"] == "ready"),
        "{state}"
    );

    // The cards: one per learner, each with a QR code of its own link,
    // printed to a one-page PDF.
    let cards = driver.session("class-cards-profile", 1000, 1400).await;
    cards.goto(&serve.cards).await.unwrap();
    let found = cards
        .execute(
            "return Array.from(document.querySelectorAll('.card')).map(c => [c.dataset.learner, !!c.querySelector('svg'), c.querySelector('.link').textContent]);",
            vec![],
        )
        .await
        .unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 3, "{found:?}");
    let links: BTreeSet<&str> = found.iter().map(|c| c[2].as_str().unwrap()).collect();
    assert_eq!(links, serve.learners.iter().map(String::as_str).collect());
    assert!(found.iter().all(|c| c[1] == true), "{found:?}");
    let pdf = cards
        .print(fantoccini::wd::PrintConfiguration::default())
        .await
        .unwrap();
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");
    let text = String::from_utf8_lossy(&pdf);
    let pages = text.matches("/Type /Page\n").count()
        + text.matches("/Type /Page/").count()
        + text.matches("/Type /Page ").count()
        + text.matches("/Type /Page>").count();
    assert_eq!(pages, 1, "three cards print on one page");
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("class-cards.pdf"),
        &pdf,
    )
    .unwrap();

    for session in [page, boardpage, cards] {
        let _ = session.close().await;
    }
    let log = serve.stop();
    for learner in learners {
        let link = learner["link"].as_str().unwrap();
        let token = link.trim_end_matches('/').rsplit('/').next().unwrap();
        assert!(!log.contains(token), "the server logged a token: {log}");
    }
    assert!(
        !log.contains(token_board),
        "the server logged the board's token: {log}"
    );

    let destroyed = run(&["class", "destroy", "--name", CLASS]);
    assert!(destroyed.status.success(), "{}", stderr(&destroyed));
    assert_eq!(leftovers(CLASS), Vec::<String>::new());
    assert!(!home().join("classes").join(CLASS).exists());
    for n in 1..=3 {
        assert!(!home().join("labs").join(format!("{CLASS}-{n}")).exists());
    }
}

#[test]
fn class_refusals_are_one_line_and_make_nothing() {
    let zero = run(&["class", "create", "--learners", "0", "--name", "tnone"]);
    assert_one_line_error(&zero, 2, "--learners 0");
    let many = run(&["class", "create", "--learners", "900", "--name", "tnone"]);
    assert_one_line_error(&many, 2, "will not fit on this machine");
    let adopting = run(&[
        "class",
        "create",
        "--learners",
        "1",
        "--name",
        "tnone",
        "--driver",
        "ssh",
    ]);
    assert_one_line_error(&adopting, 2, "adopts hosts");
    let bad_name = run(&["class", "create", "--learners", "1", "--name", "Bad_Name"]);
    assert_one_line_error(&bad_name, 2, "invalid class name");
    let missing = run(&["class", "serve", "--name", "tnone"]);
    assert_one_line_error(&missing, 2, "no class 'tnone'");
    assert!(!home().join("classes").join("tnone").exists());
    assert_eq!(leftovers("tnone"), Vec::<String>::new());
}

#[test]
fn ctrl_c_mid_create_rolls_the_whole_class_back() {
    const CLASS: &str = "tstop";
    let _guard = ClassGuard(CLASS);
    let child = goblog_lab(&["class", "create", "--learners", "2", "--name", CLASS])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once the labs' machines exist.
    wait_until("the class's first nodes", Duration::from_secs(180), || {
        !labelled(&format!("{CLASS}-1")).is_empty()
    });
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(leftovers(CLASS), Vec::<String>::new());
    assert!(!home().join("classes").join(CLASS).exists());
}
