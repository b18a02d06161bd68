//! The printable cards: one per learner, with their number, their link
//! and a QR code of it, and the server certificate's fingerprint when the
//! class serves TLS from its own CA. Cut lines are the cards' borders;
//! `break-inside: avoid` keeps a card whole on one sheet.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use qrcode::render::svg;
use qrcode::QrCode;

use super::App;
use crate::class::state::ClassState;

const STYLE: &str = r#"
  * { box-sizing: border-box; }
  body { font-family: system-ui, sans-serif; margin: 0; padding: 12mm; color: #111; }
  h1 { font-size: 14pt; margin: 0 0 6mm; }
  .hint { color: #555; font-size: 9pt; margin-bottom: 6mm; }
  .cards { display: grid; grid-template-columns: repeat(2, 90mm); gap: 0; }
  .card { width: 90mm; height: 60mm; border: 1px dashed #888; padding: 5mm; display: flex;
          gap: 4mm; break-inside: avoid; page-break-inside: avoid; }
  .card svg { width: 34mm; height: 34mm; flex: none; }
  .who { font-size: 16pt; font-weight: 700; }
  .class { font-size: 9pt; color: #555; }
  .link { font-family: ui-monospace, monospace; font-size: 6.5pt; word-break: break-all; margin-top: 2mm; }
  .fp { font-family: ui-monospace, monospace; font-size: 5.5pt; color: #444; word-break: break-all; margin-top: 2mm; }
  @media print { body { padding: 0; } .hint { display: none; } @page { size: A4; margin: 10mm; } }
"#;

pub async fn page(State(app): State<Arc<App>>, UrlPath(token): UrlPath<String>) -> Response {
    let Some(class) = app.board(&token) else {
        return super::not_found().await;
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        render(&app, &class).into_string(),
    )
        .into_response()
}

fn qr_svg(link: &str) -> String {
    QrCode::new(link.as_bytes())
        .map(|code| {
            code.render::<svg::Color>()
                .quiet_zone(true)
                .min_dimensions(160, 160)
                .build()
        })
        .unwrap_or_default()
}

pub fn render(app: &App, class: &ClassState) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Cards: class " (class.name) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Class " (class.name) ": " (class.learners.len()) " learners" }
                p.hint { "Print this page (Ctrl-P) and cut along the dashed lines. Each link opens that learner's terminal and lab, and no one else's." }
                div.cards {
                    @for learner in &class.learners {
                        @let link = app.learner_link(learner);
                        div.card data-learner=(learner.name) {
                            // The SVG is the qrcode crate's own markup, built from the link.
                            (PreEscaped(qr_svg(&link)))
                            div {
                                div.who { "#" (learner.number) " " (learner.name) }
                                div.class { "class " (class.name) ", lab " (learner.lab) }
                                div.link { (link) }
                                @if let Some(fp) = &app.fingerprint {
                                    div.fp { "TLS certificate SHA-256: " (fp) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
