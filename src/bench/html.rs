//! `bench -o html FILE`: the report as one page for a workshop screen.
//!
//! The page must open from a USB stick on a projector laptop with no
//! network, so everything is inside it: CSS inline, charts drawn here as
//! inline SVG, no script, no font or library from anywhere else. The markup
//! is written with `maud::html!`, which escapes every string it is given, so
//! what comes from the lab (its name, the URL, node and replica names; a lab
//! name is user input) cannot become markup; only the page's own constant
//! CSS goes in as `PreEscaped`.
//!
//! [`line_chart`] draws any per-second series; the latency and throughput
//! charts use it, and so do the per-task CPU and memory charts
//! ([`resource_charts`]) once the report carries them.

use std::fmt;
use std::time::SystemTime;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::report::{ms, Latency, Report};
use super::resources::Resources;

/// One named series over the run: `(label, [(second, value)])`, the shape
/// the per-task CPU and memory samples come in.
pub type Labelled = (String, Vec<(f64, f64)>);

/// Okabe–Ito: told apart with every common colour-vision deficiency, and
/// dark enough to read on white through a washed-out projector.
const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#000000",
];
/// Dashes as a second cue, for the lines that share a hue on a bad screen.
const DASHES: [&str; 4] = ["", "10 6", "3 5", "14 5 3 5"];
const BLUE: &str = PALETTE[0];
const ORANGE: &str = PALETTE[1];
const VERMILLION: &str = PALETTE[2];

/// The SVG's own coordinates; it scales to the width it is given.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 24.0;
const BOTTOM: f64 = 56.0;
const FONT: f64 = 19.0;
const LEGEND_ROW: f64 = 28.0;
/// A row of marker labels above the plot: the font's height and a gap.
const MARKER_ROW: f64 = FONT * 1.4;
/// Between a marker's line and its label, and between two labels in a row.
const MARKER_GAP: f64 = 8.0;

/// A number to one decimal place: an SVG coordinate (a tenth of a unit is
/// finer than any screen shows, and keeps the page small) or an event's
/// second.
#[derive(Clone, Copy)]
struct Tenth(f64);

impl fmt::Display for Tenth {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:.1}", self.0)
    }
}

/// The whole page. `cpu` and `memory_mib` are the per-task series (one per
/// task); the section is left out while they are empty.
pub fn render(
    report: &Report,
    when: SystemTime,
    cpu: &[Labelled],
    memory_mib: &[Labelled],
) -> String {
    let title = format!("Load test of lab '{}'", report.lab);
    let markers = markers(report);
    let frame = Frame {
        x_max: report.timeline.len().max(1) as f64,
        markers: &markers,
        shade: report
            .failover
            .as_ref()
            .map(|w| (w.from_s as f64, w.to_s as f64)),
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (header(report, when, &title))
                (headline(report))
                section class="charts" {
                    (latency_chart(report, &frame))
                    (throughput_chart(report, &frame))
                }
                @if !cpu.is_empty() || !memory_mib.is_empty() {
                    h2 class="section" { "Per-task CPU and memory" }
                    section class="charts" id="resources" {
                        (resource_charts(cpu, memory_mib, &frame))
                    }
                }
                (events(report))
                (served_by(report))
            }
        }
    }
    .into_string()
}

/// Each task's CPU and memory readings over the run, labelled as
/// `docker service ps` names the task, for `render`.
pub fn task_series(resources: &Resources) -> (Vec<Labelled>, Vec<Labelled>) {
    resources
        .tasks
        .iter()
        .map(|t| {
            let label = format!("{} on {}", t.task, t.node);
            let points = &t.usage.timeline;
            let cpu = points
                .iter()
                .filter_map(|p| Some((p.at_s, p.cpu_percent?)))
                .collect();
            let memory = points.iter().map(|p| (p.at_s, p.memory_mib)).collect();
            ((label.clone(), cpu), (label, memory))
        })
        .unzip()
}

/// Per-task CPU % and memory MiB, one series per task, as two charts with
/// the kill, the heal and the failover window marked like the others.
pub fn resource_charts(cpu: &[Labelled], memory_mib: &[Labelled], frame: &Frame) -> Markup {
    let charts = [
        ("chart-cpu", "CPU per task", "CPU %", cpu),
        ("chart-memory", "Memory per task", "MiB", memory_mib),
    ];
    html! {
        @for (id, title, unit, series) in charts {
            @let series: Vec<Series> = series
                .iter()
                .enumerate()
                .map(|(i, (label, points))| {
                    Series::nth(
                        i,
                        label,
                        points.iter().map(|&(x, y)| (x, Some(y))).collect(),
                    )
                })
                .collect();
            @let chart = Chart {
                id,
                title,
                unit,
                x_max: frame.x_max,
                scale: Scale::Linear,
                markers: frame.markers,
                shade: frame.shade,
            };
            (figure(&chart, &series))
        }
    }
}

const STYLE: &str = "
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 32px; background: #fff; color: #111;
  font: 20px/1.35 system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif; }
h1 { font-size: 34px; margin: 0 0 4px; }
h2 { font-size: 24px; margin: 0 0 6px; }
h2.section { margin-top: 20px; }
.meta { color: #333; margin: 0 0 14px; }
.meta code { font-size: 20px; background: #eef; padding: 0 6px; border-radius: 4px; }
.warning { background: #fff3d6; border-left: 8px solid #E69F00; padding: 8px 14px; margin: 0 0 14px; }
.stats { display: flex; flex-wrap: wrap; gap: 12px; margin: 0 0 14px; }
.stat { border: 2px solid #ccc; border-radius: 8px; padding: 6px 14px; min-width: 150px; }
.stat .label { font-size: 16px; text-transform: uppercase; letter-spacing: .04em; color: #333; }
.stat .value { font-size: 32px; font-weight: 700; font-variant-numeric: tabular-nums; }
.stat .sub { font-size: 16px; color: #333; }
.stat .cells { display: flex; gap: 22px; }
.stat.bad { border-color: #D55E00; }
.stat.bad .value { color: #B34700; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px 28px; }
figure { margin: 0; }
figure svg { width: 100%; height: auto; display: block; }
svg text { font-family: inherit; fill: #111; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 16px 4px 0; text-align: left; }
td.n { text-align: right; }
.bar { background: #0072B2; height: 16px; display: inline-block; vertical-align: middle; }
ul.events { margin: 0; padding-left: 24px; }
";

fn header(report: &Report, when: SystemTime, title: &str) -> Markup {
    let when = humantime::format_rfc3339_seconds(when);
    let duration =
        humantime::format_duration(std::time::Duration::from_secs_f64(report.duration_s));
    html! {
        header {
            h1 { (title) }
            p class="meta" {
                code id="url" { "GET " (report.url) }
                " ids " (report.ids) " · " (report.model) " for " (duration) " · "
                (report.connections) " keep-alive connections · "
                (report.timeout_s) "s timeout · run at " (when)
            }
            @if report.interrupted {
                p class="warning" id="interrupted" {
                    "Interrupted by Ctrl-C: the numbers are of what ran until then."
                }
            }
        }
    }
}

fn headline(report: &Report) -> Markup {
    let f = &report.failures;
    let scheduled = match report.scheduled {
        Some(n) if n != report.requests => format!("of {n} scheduled"),
        _ => "settled".into(),
    };
    let mut kinds = Vec::new();
    for (code, n) in &f.by_status {
        kinds.push(format!("{code}×{n}"));
    }
    for (kind, n) in [
        ("timeout", f.timeout),
        ("connect", f.connect),
        ("reset", f.reset),
    ] {
        if n > 0 {
            kinds.push(format!("{kind} {n}"));
        }
    }
    let kinds = if kinds.is_empty() {
        "none".to_string()
    } else {
        kinds.join(" · ")
    };
    html! {
        section class="stats" {
            (stat("requests", "Requests", &report.requests.to_string(), &scheduled, false))
            (stat("failures", "Failures", &f.total.to_string(), &kinds, f.total > 0))
            (stat(
                "throughput",
                "Throughput",
                &format!("{:.1}", report.throughput_rps),
                &format!("req/s over {:.1}s", report.elapsed_s),
                false,
            ))
            @match &report.latency_ms {
                Some(l) => (latency_cells(l)),
                None => (stat("latency", "Latency", "–", "no request was answered", true)),
            }
        }
    }
}

/// The latency stat: one cell per statistic, each with an id of its own
/// (`latency-p99_9`: no dot, so a CSS selector needs no escape).
fn latency_cells(l: &Latency) -> Markup {
    let Latency {
        min,
        mean,
        p50,
        p90,
        p99,
        p99_9,
        max,
    } = l;
    let cells = [
        ("min", min),
        ("mean", mean),
        ("p50", p50),
        ("p90", p90),
        ("p99", p99),
        ("p99.9", p99_9),
        ("max", max),
    ];
    html! {
        div class="stat" id="latency" {
            div class="label" { "Latency ms" }
            div class="cells" {
                @for (name, value) in cells {
                    div {
                        div class="value" id={ "latency-" (name.replace('.', "_")) } { (ms(*value)) }
                        div class="sub" { (name) }
                    }
                }
            }
        }
    }
}

fn stat(id: &str, label: &str, value: &str, sub: &str, bad: bool) -> Markup {
    html! {
        div.stat.bad[bad] {
            div class="label" { (label) }
            div class="value" id=(id) { (value) }
            div class="sub" { (sub) }
        }
    }
}

fn markers(report: &Report) -> Vec<Marker> {
    report
        .events
        .iter()
        .map(|e| Marker {
            at: e.at_s,
            // The time first: a label that had to move to a row of its own,
            // or to the left of its line, still says which line is its own.
            label: format!("{:.1}s: {}", e.at_s, e.what),
        })
        .collect()
}

/// Seconds are plotted at their middle: second 3 holds what was due in
/// [3, 4), and a kill at 3.0 s sits on its left edge.
fn mid(second: u64) -> f64 {
    second as f64 + 0.5
}

fn latency_chart(report: &Report, frame: &Frame) -> Markup {
    let column = |pick: fn(&super::report::SecondRow) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        report
            .timeline
            .iter()
            .map(|row| (mid(row.second), pick(row)))
            .collect()
    };
    let series = [
        Series::styled("p50", column(|r| r.p50_ms), BLUE, DASHES[0]),
        Series::styled("p90", column(|r| r.p90_ms), ORANGE, DASHES[1]),
        Series::styled("p99", column(|r| r.p99_ms), VERMILLION, DASHES[2]),
    ];
    // A failover puts timeouts of seconds beside answers of a millisecond:
    // only a log axis shows both.
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1));
    let (lo, hi) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let scale = if lo > 0.0 && hi / lo > 20.0 {
        Scale::Log
    } else {
        Scale::Linear
    };
    let chart = Chart {
        id: "chart-latency",
        title: "Latency per second",
        unit: "ms",
        x_max: frame.x_max,
        scale,
        markers: frame.markers,
        shade: frame.shade,
    };
    figure(&chart, &series)
}

fn throughput_chart(report: &Report, frame: &Frame) -> Markup {
    let column = |pick: fn(&super::report::SecondRow) -> u64| -> Vec<(f64, Option<f64>)> {
        report
            .timeline
            .iter()
            .map(|row| (mid(row.second), Some(pick(row) as f64)))
            .collect()
    };
    let mut failures = Series::styled("failed/s", column(|r| r.failures), VERMILLION, DASHES[0]);
    failures.dots = true;
    let series = [
        Series::styled("requests/s", column(|r| r.requests), BLUE, DASHES[0]),
        failures,
    ];
    let chart = Chart {
        id: "chart-throughput",
        title: "Throughput per second",
        unit: "requests",
        x_max: frame.x_max,
        scale: Scale::Linear,
        markers: frame.markers,
        shade: frame.shade,
    };
    figure(&chart, &series)
}

fn events(report: &Report) -> Markup {
    html! {
        @if !report.events.is_empty() || report.failover.is_some() {
            section id="events" {
                h2 class="section" { "Failover" }
                ul class="events" {
                    @for event in &report.events {
                        li { "at " (Tenth(event.at_s)) " s: " (event.what) }
                    }
                    @if let Some(w) = &report.failover {
                        li id="failover" {
                            "seconds " (w.from_s) "–" (w.to_s) " (shaded): "
                            (w.requests) " requests, " (w.failures) " failed, "
                            (w.latency_summary()) "; " (w.disturbed_summary())
                        }
                    }
                }
            }
        }
    }
}

fn served_by(report: &Report) -> Markup {
    let total: u64 = report.served_by.iter().map(|r| r.requests).sum();
    html! {
        section id="served-by" {
            h2 class="section" { "Served by" }
            @if report.served_by.is_empty() {
                p { "No answer named its replica (servedBy)." }
            } @else {
                table {
                    tr { th { "replica" } th { "requests" } th { "share" } }
                    @for replica in &report.served_by {
                        @let share = 100.0 * replica.requests as f64 / total.max(1) as f64;
                        tr {
                            td { (replica.replica) }
                            td class="n" { (replica.requests) }
                            td {
                                span class="bar" style={ "width:" (format!("{:.0}", share * 3.0)) "px" } {}
                                " " (format!("{share:.0}")) "%"
                            }
                        }
                    }
                }
            }
            @if let Some(percent) = report.fallback_percent {
                p class="quotes" {
                    "Quotes: " (report.quotes.live) " live, " (report.quotes.fallback) " the fallback ("
                    strong { (format!("{percent:.1}")) " %" }
                    "): the quote call failed, was shed by the accountservice's bulkhead, or its breaker was open."
                }
            }
        }
    }
}

/// What every chart of one run shares: its length, its events and the
/// failover window.
pub struct Frame<'a> {
    /// Seconds the x axis runs to.
    pub x_max: f64,
    pub markers: &'a [Marker],
    /// Seconds to shade, from and to.
    pub shade: Option<(f64, f64)>,
}

/// A vertical line across a chart: a kill or a heal.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub at: f64,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

pub struct Chart<'a> {
    /// The SVG's id, for tests and links.
    pub id: &'a str,
    pub title: &'a str,
    /// The y axis' label.
    pub unit: &'a str,
    /// The x axis runs from 0 to this many seconds.
    pub x_max: f64,
    pub scale: Scale,
    pub markers: &'a [Marker],
    /// Seconds to shade, from and to: the failover window.
    pub shade: Option<(f64, f64)>,
}

pub struct Series<'a> {
    pub label: &'a str,
    /// `None` leaves a gap: a second with nothing to show (no answer).
    pub points: Vec<(f64, Option<f64>)>,
    pub colour: &'a str,
    pub dash: &'a str,
    /// A dot on each point above zero, so a single failed second is seen.
    pub dots: bool,
}

impl<'a> Series<'a> {
    pub fn styled(
        label: &'a str,
        points: Vec<(f64, Option<f64>)>,
        colour: &'a str,
        dash: &'a str,
    ) -> Self {
        Series {
            label,
            points,
            colour,
            dash,
            dots: false,
        }
    }

    /// The i-th of many alike (one per task): colours first, then dashes.
    pub fn nth(i: usize, label: &'a str, points: Vec<(f64, Option<f64>)>) -> Self {
        let dash = DASHES[(i / PALETTE.len()) % DASHES.len()];
        Series::styled(label, points, PALETTE[i % PALETTE.len()], dash)
    }

    /// The `stroke-dasharray`, none for a solid line.
    fn dasharray(&self) -> Option<&'a str> {
        Some(self.dash).filter(|d| !d.is_empty())
    }
}

/// A chart in a `<figure>` with its title.
fn figure(chart: &Chart, series: &[Series]) -> Markup {
    html! {
        figure {
            h2 { (chart.title) }
            (line_chart(chart, series))
        }
    }
}

/// One inline SVG: axes with labelled ticks, a legend, each series as
/// polylines (one per run of values, gaps left open) inside a
/// `<g class="series" data-label=…>`, the markers as dashed vertical lines
/// with their labels in rows above the plot (`label_spots`).
///
/// SVG elements are closed with an end tag (`<line …></line>`): in HTML a
/// foreign element has to be, or close itself with `/>`, which maud does
/// not write; else what follows would be drawn inside it.
pub fn line_chart(chart: &Chart, series: &[Series]) -> Markup {
    let legend = legend_rows(series);
    let labels: Vec<(String, f64)> = chart.markers.iter().map(|m| fit_label(&m.label)).collect();
    let plot_w = WIDTH - LEFT - RIGHT;
    let x_max = chart.x_max.max(1.0);
    let x = |s: f64| LEFT + s.clamp(0.0, x_max) / x_max * plot_w;
    let spots = label_spots(
        &chart
            .markers
            .iter()
            .zip(&labels)
            .map(|(m, (_, width))| (x(m.at), *width))
            .collect::<Vec<_>>(),
        MARKER_GAP,
        WIDTH - MARKER_GAP,
    );
    // The markers' labels get rows of their own above the plot, and the
    // chart grows by them, so the plot keeps its height however many.
    let band = spots.iter().map(|s| s.row + 1).max().unwrap_or(0) as f64 * MARKER_ROW;
    let height = HEIGHT + band;
    let top = 16.0 + legend.len() as f64 * LEGEND_ROW + 12.0 + band;
    let plot_h = height - top - BOTTOM;
    let bottom = top + plot_h;
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    let y_ticks = match chart.scale {
        // Headroom, so a flat line at the top is not drawn on the frame.
        Scale::Linear => linear_ticks(values.iter().copied().fold(0.0, f64::max) * 1.05),
        Scale::Log => log_ticks(
            values
                .iter()
                .copied()
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min),
            values.iter().copied().fold(0.0, f64::max),
        ),
    };
    let (y_lo, y_hi) = (y_ticks[0], *y_ticks.last().expect("ticks are never empty"));
    let y = |v: f64| {
        let t = match chart.scale {
            Scale::Linear => (v - y_lo) / (y_hi - y_lo),
            Scale::Log => (v.max(y_lo).log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10()),
        };
        top + plot_h * (1.0 - t.clamp(0.0, 1.0))
    };
    let x_ticks = linear_ticks(x_max)
        .into_iter()
        .take_while(|&tick| tick <= x_max + 1e-9);
    // Path data and point lists stay Rust: numbers, not markup.
    let axes = format!("M{LEFT} {top:.1} V{bottom:.1} H{:.1}", LEFT + plot_w);
    let runs = |s: &Series| -> Vec<String> {
        s.points
            .split(|p| p.1.is_none_or(|v| !v.is_finite()))
            .filter(|run| !run.is_empty())
            .map(|run| {
                run.iter()
                    .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py.unwrap_or_default())))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let dots = |s: &Series| -> Vec<(Tenth, Tenth)> {
        if !s.dots {
            return Vec::new();
        }
        s.points
            .iter()
            .filter_map(|&(px, py)| py.filter(|v| *v > 0.0).map(|v| (Tenth(x(px)), Tenth(y(v)))))
            .collect()
    };
    let scale = match chart.scale {
        Scale::Linear => "linear",
        Scale::Log => "log",
    };

    html! {
        svg id=(chart.id) class="chart" data-scale=(scale) viewBox={ "0 0 " (WIDTH) " " (height) }
            role="img" aria-label=(chart.title) font-size=(FONT)
        {
            @if let Some((from, to)) = chart.shade {
                rect class="failover" x=(Tenth(x(from))) y=(Tenth(top))
                    width=(Tenth((x(to) - x(from)).max(0.0))) height=(Tenth(plot_h))
                    fill="#000" fill-opacity="0.07" {}
            }
            // Grid and y ticks.
            @for tick in &y_ticks {
                @let ty = Tenth(y(*tick));
                line x1=(LEFT) x2=(Tenth(LEFT + plot_w)) y1=(ty) y2=(ty) stroke="#ccc" {}
                text class="y-tick" x=(Tenth(LEFT - 8.0)) y=(Tenth(ty.0 + FONT * 0.35))
                    text-anchor="end" { (tick_label(*tick)) }
            }
            @for tick in x_ticks {
                @let tx = Tenth(x(tick));
                line x1=(tx) x2=(tx) y1=(Tenth(bottom)) y2=(Tenth(bottom + 6.0)) stroke="#111" {}
                text class="x-tick" x=(tx) y=(Tenth(bottom + 6.0 + FONT)) text-anchor="middle" {
                    (tick_label(tick))
                }
            }
            // Axes and their labels.
            path d=(axes) fill="none" stroke="#111" stroke-width="2" {}
            text x=(Tenth(LEFT + plot_w / 2.0)) y=(Tenth(height - 8.0)) text-anchor="middle" {
                "seconds into the run"
            }
            text transform={ "translate(20 " (Tenth(top + plot_h / 2.0)) ") rotate(-90)" }
                text-anchor="middle"
            {
                (chart.unit)
                @if chart.scale == Scale::Log { " (log)" }
            }
            // Each marker's line across the plot, its label above the plot
            // in the row `label_spots` found for it, beside the line (ending
            // at it when that side is full).
            @for ((marker, (label, _)), spot) in chart.markers.iter().zip(&labels).zip(&spots) {
                @let mx = Tenth(x(marker.at));
                g class="marker" {
                    line x1=(mx) x2=(mx) y1=(Tenth(top)) y2=(Tenth(bottom))
                        stroke="#111" stroke-width="2" stroke-dasharray="6 4" {}
                    text x=(Tenth(if spot.end { spot.to } else { spot.from }))
                        y=(Tenth(top - 6.0 - spot.row as f64 * MARKER_ROW))
                        text-anchor=(if spot.end { "end" } else { "start" }) { (label) }
                }
            }
            @if values.is_empty() {
                text class="empty" x=(Tenth(LEFT + plot_w / 2.0)) y=(Tenth(top + plot_h / 2.0))
                    text-anchor="middle" { "no data" }
            }
            @for s in series {
                g class="series" data-label=(s.label) stroke=(s.colour) fill="none"
                    stroke-width="3.5" stroke-linejoin="round" stroke-linecap="round"
                    stroke-dasharray=[s.dasharray()]
                {
                    @for points in runs(s) {
                        polyline points=(points) {}
                    }
                    @for (cx, cy) in dots(s) {
                        circle cx=(cx) cy=(cy) r="5" fill=(s.colour) stroke="none" {}
                    }
                }
            }
            // The legend, on top of everything.
            @for (row, items) in legend.iter().enumerate() {
                @let ly = 16.0 + row as f64 * LEGEND_ROW + LEGEND_ROW / 2.0;
                @for &(at, i) in items {
                    @let (s, lx) = (&series[i], LEFT + at);
                    g class="legend" {
                        line x1=(Tenth(lx)) x2=(Tenth(lx + 36.0)) y1=(Tenth(ly)) y2=(Tenth(ly))
                            stroke=(s.colour) stroke-width="4" stroke-dasharray=[s.dasharray()] {}
                        text x=(Tenth(lx + 42.0)) y=(Tenth(ly + FONT * 0.35)) { (s.label) }
                    }
                }
            }
        }
    }
}

/// A marker label's text and its width in the chart's font, estimated
/// generously, since the page picks no font and the projector laptop's
/// sans-serif is not known: widths in em a little over DejaVu Sans' (the
/// widest of them), one em for `m`, `w` and anything not ASCII. Too wide
/// for the chart (a heal's advice can be), it is cut to fit with an
/// ellipsis; the events list below the charts has it whole.
fn fit_label(label: &str) -> (String, f64) {
    let em = |c: char| match c {
        'i' | 'j' | 'l' | 't' | 'f' | 'r' | ' ' | '.' | ',' | ':' | '(' | ')' | '-' | '\'' => 0.45,
        'm' | 'w' | 'M' | 'W' | '@' | '%' => 1.0,
        c if !c.is_ascii() => 1.0,
        c if c.is_ascii_uppercase() => 0.8,
        _ => 0.65,
    };
    let max = WIDTH - 2.0 * MARKER_GAP;
    let width = label.chars().map(em).sum::<f64>() * FONT;
    if width <= max {
        return (label.to_string(), width);
    }
    let (mut text, mut width) = (String::new(), em('…') * FONT);
    for c in label.chars() {
        if width + em(c) * FONT > max {
            break;
        }
        text.push(c);
        width += em(c) * FONT;
    }
    text.push('…');
    (text, width)
}

/// Where a marker's label goes: its row above the plot (0 nearest it),
/// the x-extent it takes, and whether it ends at its line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LabelSpot {
    row: usize,
    from: f64,
    to: f64,
    end: bool,
}

/// Places the markers' labels, given each one's line and width, so that no
/// two overlap whatever the times: a kill and a heal a second apart, or a
/// dozen events. A label starts just after its line, or ends just before
/// it when it would run past `right`; it then goes in the first row where
/// it keeps clear of every label already there. A label too wide for
/// either side of its line is kept between `left` and `right` instead.
fn label_spots(lines_and_widths: &[(f64, f64)], left: f64, right: f64) -> Vec<LabelSpot> {
    let mut spots: Vec<LabelSpot> = Vec::new();
    for &(at, width) in lines_and_widths {
        let (from, end) = if at + MARKER_GAP + width <= right {
            (at + MARKER_GAP, false)
        } else if at - MARKER_GAP - width >= left {
            (at - MARKER_GAP - width, true)
        } else {
            (
                (at - width / 2.0).clamp(left, (right - width).max(left)),
                false,
            )
        };
        let to = from + width;
        let row = (0..)
            .find(|&row| {
                spots
                    .iter()
                    .all(|s| s.row != row || s.to + MARKER_GAP <= from || to + MARKER_GAP <= s.from)
            })
            .expect("a row above every label is free");
        spots.push(LabelSpot { row, from, to, end });
    }
    spots
}

/// Where each legend entry goes: rows of `(x offset, series index)`,
/// wrapped to the plot's width (one series per task can be many).
fn legend_rows(series: &[Series]) -> Vec<Vec<(f64, usize)>> {
    let width = WIDTH - LEFT - RIGHT;
    let mut rows: Vec<Vec<(f64, usize)>> = vec![Vec::new()];
    let mut at = 0.0;
    for (i, s) in series.iter().enumerate() {
        // Wide enough for the sample line and the label in this font.
        let w = 42.0 + s.label.chars().count() as f64 * FONT * 0.58 + 24.0;
        if at > 0.0 && at + w > width {
            rows.push(Vec::new());
            at = 0.0;
        }
        rows.last_mut().expect("a row").push((at, i));
        at += w;
    }
    rows
}

/// Ticks from 0 to at least `max`, 1, 2 or 5 times a power of ten apart,
/// about five of them.
pub fn linear_ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let rough = max / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power);
    let count = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

/// Powers of ten around `[lo, hi]`, with 2 and 5 between them when the
/// values span less than two decades (else a lone tick would be all).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = if lo.is_finite() && lo > 0.0 && hi >= lo {
        (lo, hi)
    } else {
        (1.0, 10.0)
    };
    let first = lo.log10().floor() as i32;
    let last = (hi.log10().ceil() as i32).max(first + 1);
    let mut ticks = Vec::new();
    for power in first..=last {
        let base = 10f64.powi(power);
        ticks.push(base);
        if last - first <= 2 && power < last {
            ticks.extend([2.0 * base, 5.0 * base]);
        }
    }
    ticks
}

/// A tick's number, with no trailing zeros: 0.5, 2, 1000.
fn tick_label(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::super::report::tests::sample;
    use super::*;

    fn page(report: &Report) -> String {
        render(report, SystemTime::UNIX_EPOCH, &[], &[])
    }

    #[test]
    fn every_string_from_the_lab_is_escaped() {
        let mut report = sample();
        report.lab = "<script>alert(1)</script>".into();
        report.served_by[0].replica = "\"><img src=x>".into();
        report.events[0].what = "killed <b>".into();
        let html = page(&report);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn a_hostile_task_or_node_name_stays_text() {
        // In an element's text (the legend, the events list, the served-by
        // table) and in a quoted attribute (the series' data-label).
        let hostile = r#"<script>&"x"</script> on n<b>"#;
        let escaped = "&lt;script&gt;&amp;&quot;x&quot;&lt;/script&gt; on n&lt;b&gt;";
        let mut report = sample();
        report.served_by[0].replica = hostile.into();
        report.events[0].what = format!("killed {hostile}");
        let cpu = vec![(hostile.to_string(), vec![(0.5, 1.0), (1.5, 2.0)])];
        let html = render(&report, SystemTime::UNIX_EPOCH, &cpu, &cpu);
        for raw in ["<script", "<b>", "&\"", "\"x\""] {
            assert!(!html.contains(raw), "{raw} in {html}");
        }
        assert!(
            html.contains(&format!("data-label=\"{escaped}\"")),
            "{html}"
        );
        assert!(html.contains(&format!("<td>{escaped}</td>")), "{html}");
        assert!(
            html.contains(&format!("s: killed {escaped}</li>")),
            "{html}"
        );
        // The chart's marker label too, after its time.
        assert!(
            html.contains(&format!(">1.2s: killed {escaped}</text>")),
            "{html}"
        );
        assert_eq!(
            html.matches(&format!(">{escaped}</text>")).count(),
            2,
            "{html}"
        );
    }

    #[test]
    fn linear_ticks_are_round_and_cover_the_maximum() {
        assert_eq!(linear_ticks(100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(linear_ticks(7.0), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(
            linear_ticks(0.0),
            [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let ticks = linear_ticks(1234.0);
        assert_eq!(ticks[1], 500.0);
        assert!(*ticks.last().unwrap() >= 1234.0);
        assert_eq!(tick_label(0.6000000000000001), "0.6");
        assert_eq!(tick_label(1000.0), "1000");
        assert_eq!(tick_label(0.25), "0.25");
    }

    #[test]
    fn log_ticks_are_decades_with_steps_between_when_few() {
        assert_eq!(
            log_ticks(0.3, 2500.0),
            [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]
        );
        assert_eq!(
            log_ticks(1.5, 40.0),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(log_ticks(f64::INFINITY, 0.0), [1.0, 2.0, 5.0, 10.0]);
    }

    #[test]
    fn an_empty_timeline_still_draws_both_charts() {
        let mut report = sample();
        report.timeline.clear();
        report.events.clear();
        report.failover = None;
        report.latency_ms = None;
        report.served_by.clear();
        let html = page(&report);
        assert!(html.contains("id=\"chart-latency\""), "{html}");
        assert!(html.contains("id=\"chart-throughput\""), "{html}");
        assert_eq!(html.matches("no data").count(), 2, "{html}");
        assert!(!html.contains("<polyline"), "{html}");
        assert!(html.contains("no request was answered"));
        assert!(html.contains("No answer named its replica"));
        assert!(!html.contains("id=\"events\""));
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
    }

    #[test]
    fn a_report_with_events_marks_them_on_both_charts() {
        let report = sample();
        let html = page(&report);
        assert_eq!(html.matches("<g class=\"marker\">").count(), 4, "{html}");
        assert_eq!(
            html.matches(">1.2s: killed swarm-worker-0</text>").count(),
            2
        );
        assert_eq!(html.matches("<rect class=\"failover\"").count(), 2);
        assert!(
            html.contains("seconds 1–2 (shaded): 51 requests, 1 failed"),
            "{html}"
        );
        // One point per second in each series; the timeline has two.
        let latency = &html[html.find("id=\"chart-latency\"").unwrap()..];
        let p50 = &latency[latency.find("data-label=\"p50\"").unwrap()..];
        let polyline = &p50[p50.find("points=\"").unwrap() + 8..];
        let points = &polyline[..polyline.find('"').unwrap()];
        assert_eq!(points.split(' ').count(), 2, "{points}");
        assert!(html.contains("id=\"requests\">101<"), "{html}");
        assert!(html.contains("id=\"latency-p99_9\">"), "{html}");
        assert!(!html.contains("NaN"), "{html}");
    }

    #[test]
    fn nothing_is_loaded_from_elsewhere() {
        let report = sample();
        // The target's URL is shown as text, and is the one address allowed.
        let html = page(&report).replace(&report.url, "");
        for needle in ["http://", "https://", "<script", "<link", "@import", "url("] {
            assert!(!html.contains(needle), "{needle} in {html}");
        }
    }

    #[test]
    fn resources_show_only_when_given() {
        let report = sample();
        assert!(!page(&report).contains("chart-cpu"));
        let cpu = vec![
            (
                "accountservice.1".to_string(),
                vec![(0.5, 12.0), (1.5, 30.0)],
            ),
            (
                "accountservice.2".to_string(),
                vec![(0.5, 10.0), (1.5, 25.0)],
            ),
        ];
        let memory = vec![("accountservice.1".to_string(), vec![(0.5, 8.0), (1.5, 9.0)])];
        let html = render(&report, SystemTime::UNIX_EPOCH, &cpu, &memory);
        assert!(html.contains("id=\"chart-cpu\""));
        assert!(html.contains("id=\"chart-memory\""));
        assert!(html.contains("data-label=\"accountservice.2\""));
    }

    #[test]
    fn a_long_legend_wraps() {
        let names: Vec<String> = (0..12)
            .map(|i| format!("accountservice.{i}.abcdef"))
            .collect();
        let series: Vec<Series> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Series::nth(i, n, vec![(0.5, Some(1.0))]))
            .collect();
        let rows = legend_rows(&series);
        assert!(rows.len() > 2, "{rows:?}");
        assert!(rows
            .iter()
            .flatten()
            .all(|&(at, _)| at < WIDTH - LEFT - RIGHT));
        assert_ne!(series[0].colour, series[1].colour);
        assert_ne!(series[0].dash, series[7].dash);
    }

    /// No two labels of a row share any x, gap included, and each lies
    /// between `left` and `right`.
    fn assert_clear(spots: &[LabelSpot], left: f64, right: f64) {
        for (i, a) in spots.iter().enumerate() {
            assert!(a.from >= left && a.to <= right, "{a:?}");
            for b in &spots[i + 1..] {
                assert!(
                    a.row != b.row || a.to + MARKER_GAP <= b.from || b.to + MARKER_GAP <= a.from,
                    "{a:?} and {b:?} overlap"
                );
            }
        }
    }

    #[test]
    fn close_markers_get_rows_of_their_own() {
        // A kill and a heal a second apart, and one on the other.
        for lines in [[300.0, 320.0], [300.0, 300.0]] {
            let spots = label_spots(&[(lines[0], 400.0), (lines[1], 380.0)], 8.0, 712.0);
            assert_clear(&spots, 8.0, 712.0);
            assert_eq!((spots[0].row, spots[1].row), (0, 1), "{spots:?}");
        }
        // Far enough apart, they share the first row.
        let spots = label_spots(&[(100.0, 200.0), (400.0, 200.0)], 8.0, 712.0);
        assert_eq!(spots.iter().map(|s| s.row).max(), Some(0), "{spots:?}");
        assert_eq!((spots[0].from, spots[1].from), (108.0, 408.0));
    }

    #[test]
    fn a_label_at_the_right_edge_ends_at_its_line() {
        let spots = label_spots(&[(690.0, 300.0), (700.0, 300.0)], 8.0, 712.0);
        assert_clear(&spots, 8.0, 712.0);
        assert!(spots[0].end && spots[0].to == 682.0, "{spots:?}");
        assert_eq!(spots[1].row, 1, "{spots:?}");
        // Too wide for either side of its line: inside the chart still.
        let spots = label_spots(&[(360.0, 600.0)], 8.0, 712.0);
        assert_clear(&spots, 8.0, 712.0);
    }

    #[test]
    fn many_markers_never_overlap() {
        // Forty events at uneven times with uneven labels.
        let lines: Vec<(f64, f64)> = (0..40)
            .map(|i| (84.0 + (i * 37 % 612) as f64, 120.0 + (i * 53 % 300) as f64))
            .collect();
        let spots = label_spots(&lines, 8.0, 712.0);
        assert_clear(&spots, 8.0, 712.0);
        assert!(spots.iter().any(|s| s.end) && spots.iter().any(|s| !s.end));
        for (spot, &(at, _)) in spots.iter().zip(&lines) {
            let beside = if spot.end {
                at - spot.to
            } else {
                spot.from - at
            };
            assert_eq!(beside, MARKER_GAP, "{spot:?} at {at}");
        }
    }

    #[test]
    fn a_label_too_wide_for_the_chart_is_cut() {
        let (text, width) = fit_label("killed swarm-worker-0 (took 2.5s)");
        assert_eq!(text, "killed swarm-worker-0 (took 2.5s)");
        // Wider than DejaVu Sans draws it in this font (318 in headless Chromium).
        assert!((330.0..450.0).contains(&width), "{width}");
        let advice = format!(
            "healed swarm-worker-1, now on 172.28.0.12: {}",
            "x".repeat(80)
        );
        let (text, width) = fit_label(&advice);
        assert!(
            text.ends_with('…') && width <= WIDTH - 2.0 * MARKER_GAP,
            "{text} {width}"
        );
    }

    #[test]
    fn the_chart_grows_by_its_rows_of_labels() {
        let markers: Vec<Marker> = (0..3)
            .map(|i| Marker {
                at: 2.0 + i as f64 * 0.5,
                label: format!("killed swarm-worker-{i} (took 2.5s)"),
            })
            .collect();
        let chart = |markers| Chart {
            id: "c",
            title: "t",
            unit: "u",
            x_max: 8.0,
            scale: Scale::Linear,
            markers,
            shade: None,
        };
        let series = [Series::nth(0, "s", vec![(0.5, Some(1.0))])];
        let plain = line_chart(&chart(&[]), &series).into_string();
        assert!(
            plain.contains(&format!("viewBox=\"0 0 {WIDTH} {HEIGHT}\"")),
            "{plain}"
        );
        let svg = line_chart(&chart(&markers), &series).into_string();
        let height = HEIGHT + 3.0 * MARKER_ROW;
        assert!(
            svg.contains(&format!("viewBox=\"0 0 {WIDTH} {height}\"")),
            "{svg}"
        );
        // The plot is as tall as without the labels: the y axis' path
        // `M{left} {top} V{bottom} …` is as long.
        let axis = |svg: &str| -> f64 {
            let d = svg.split("<path d=\"M").nth(1).unwrap();
            let numbers: Vec<f64> = d
                .split(['"', ' ', 'V', 'H'])
                .take(4)
                .filter_map(|n| n.parse().ok())
                .collect();
            numbers[2] - numbers[1]
        };
        assert_eq!(axis(&plain), axis(&svg));
        // Three labels half a second apart, one a row, rows above the plot.
        let ys: Vec<f64> = svg
            .split("<text x=\"")
            .skip(1)
            .filter(|t| t.contains("killed"))
            .map(|t| t.split('"').nth(2).unwrap().parse().unwrap())
            .collect();
        assert_eq!(ys.len(), 3, "{svg}");
        assert!(ys[0] > ys[1] && ys[1] > ys[2], "{ys:?}");
    }
}
