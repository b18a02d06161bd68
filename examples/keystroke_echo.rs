//! The class terminal's keystroke-to-echo time, as a learner feels it:
//! for each learner link given, a WebSocket to their terminal (as the page
//! opens it), then ROUNDS times a character sent and the time until the
//! shell echoes it, then a backspace to erase it. Every terminal at once;
//! prints p50, p99 and max over all keystrokes. Used by bench/class.sh.
//!
//!   cargo run --release --example keystroke_echo -- ROUNDS LINK...

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .and_then(|r| r.parse().ok())
        .expect("ROUNDS LINK...");
    let links: Vec<String> = args.collect();
    assert!(!links.is_empty(), "give at least one learner link");
    let terminals =
        futures_util::future::join_all(links.iter().map(|link| typist(link, rounds))).await;
    let mut all = Histogram::<u64>::new(3).unwrap();
    for times in terminals {
        for t in times {
            all.record(t.as_micros() as u64).unwrap();
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{} terminals, {} keystrokes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        links.len(),
        all.len(),
        ms(all.value_at_quantile(0.5)),
        ms(all.value_at_quantile(0.99)),
        ms(all.max())
    );
}

/// One terminal: its echo times.
async fn typist(link: &str, rounds: usize) -> Vec<Duration> {
    let url = format!("{}term", link.replacen("http", "ws", 1));
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the terminal opens");
    let (mut to, mut from) = socket.split();
    let input = |text: &str| Message::Text(serde_json::json!({ "input": text }).to_string().into());
    // Until the prompt: the shell is ready.
    read_until(&mut from, "$ ").await;
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let key = char::from(b'a' + (i % 26) as u8).to_string();
        let sent = Instant::now();
        to.send(input(&key)).await.unwrap();
        read_until(&mut from, &key).await;
        times.push(sent.elapsed());
        to.send(input("\u{7f}")).await.unwrap();
        read_until(&mut from, "\u{8}").await;
    }
    times
}

async fn read_until<S>(from: &mut S, wanted: &str)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(wanted) {
        let message = tokio::time::timeout_at(deadline, from.next())
            .await
            .expect("the terminal answers within 30 s")
            .expect("the terminal stays open")
            .expect("a WebSocket message");
        if let Message::Binary(bytes) = message {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}
