//! `ergon audit plot`: joules over time, per actor, operation or principal, as an SVG.
//!
//! [`Plot::read`] turns a log into what is drawn, in two passes over the log so that memory does
//! not grow with it: the first finds the time span and each series' total (a log may name any
//! number of principals; the largest [`MAX_SERIES`] are drawn and the rest summed into one), the
//! second sums each series' charges into `points` equal stretches of time. Each series is drawn
//! cumulative: the joules charged from the log's first entry up to each stretch's end. Under
//! physical accounting an actor's series includes its corrections (the attribution entries'
//! `charged_j`). Refusals are marked on their series, once per stretch that had any; alerts are
//! marked along the top; where the log has attribution entries, the machine's counter is drawn
//! beside the charges, on an axis of its own.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use security::audit::{AuditEntry, AuditReader, EntryKind, Outcome, ReadError};

/// The most series drawn; the rest are summed into "others".
pub const MAX_SERIES: usize = 12;

/// What the series are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// One series per actor (`node-manager/n1`), corrections of physical accounting included.
    Actor,
    /// One per operation (`join`, `broadcast`).
    Operation,
    /// One per principal (`user:operator`).
    Principal,
}

/// One line: cumulative joules at the end of each stretch, from 0 at the start.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// (seconds since the first entry, cumulative joules), `points + 1` of them.
    pub points: Vec<(f64, f64)>,
    /// Stretches with refusals: (seconds, cumulative joules there, refusals).
    pub denied: Vec<(f64, f64, u64)>,
}

/// An alert mark: when, and how serious.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertMark {
    /// Seconds since the first entry (the end of its stretch).
    pub at: f64,
    /// `warning`, `critical` or `info`.
    pub level: String,
    /// How many alerts of that level fell in the stretch.
    pub count: u64,
}

/// Everything drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// The series, largest total first.
    pub series: Vec<Series>,
    /// The machine's counter, cumulative, where the log has attribution entries.
    pub counter: Option<Series>,
    /// Alerts, per stretch and level.
    pub alerts: Vec<AlertMark>,
    /// The time the plot covers, in seconds.
    pub span: f64,
    /// What the joules are: `accounting/source` of the requests.
    pub joules_from: Vec<String>,
}

/// Where an entry goes.
enum Role<'a> {
    /// A request (or, by actor, a correction) charged to a series.
    Charge { key: &'a str, joules: f64, denied: bool },
    /// An alert.
    Alert(&'a str),
    /// A share of the counter (its `measured_j` adds to the counter line).
    Counter { key: Option<&'a str>, correction: f64, measured: f64 },
    Other,
}

fn key(entry: &AuditEntry, by: By) -> &str {
    match by {
        By::Actor => &entry.actor,
        By::Operation => &entry.operation,
        By::Principal => entry.principal.as_str(),
    }
}

fn role(entry: &AuditEntry, by: By) -> Role<'_> {
    match entry.kind {
        EntryKind::EnergyUsage | EntryKind::SecurityViolation | EntryKind::Rejected => {
            Role::Charge { key: key(entry, by), joules: entry.charged(), denied: entry.outcome == Outcome::Denied }
        }
        EntryKind::EnergyAlert => Role::Alert(entry.detail.alert().unwrap_or("alert")),
        EntryKind::EnergyAttribution => {
            let energy = entry.energy.as_ref();
            Role::Counter {
                // A correction is an actor's; it has no operation or principal to go to.
                key: (by == By::Actor).then_some(&*entry.actor),
                correction: energy.map_or(0.0, |e| e.charged_j),
                measured: energy.map_or(0.0, |e| e.measured_j),
            }
        }
        EntryKind::LogRepair => Role::Other,
    }
}

/// Calls `each` with every entry of the log at `path`; a torn final line is the only damage
/// passed over (the log may be being written).
fn each_entry(path: &Path, mut each: impl FnMut(&AuditEntry)) -> Result<()> {
    let reader = AuditReader::open(path)?;
    for entry in reader.entries() {
        match entry {
            Ok(stored) => each(&stored.entry),
            Err(ReadError::TornTail { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

const OTHERS: &str = "others";

impl Plot {
    /// Reads the log at `path` into `points` stretches per series.
    pub fn read(path: &Path, by: By, points: usize) -> Result<Plot> {
        if points == 0 {
            bail!("--points must be at least 1");
        }
        // Pass 1: the span, and each series' total, to choose which to draw.
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        let mut totals: BTreeMap<String, f64> = BTreeMap::new();
        let mut joules_from: BTreeMap<String, ()> = BTreeMap::new();
        let mut any = false;
        each_entry(path, |entry| {
            let ns = ns(entry);
            let role = role(entry, by);
            if let (Role::Charge { .. }, Some(energy)) = (&role, &entry.energy) {
                if joules_from.len() < 16 {
                    joules_from.insert(format!("{}/{}", energy.accounting, energy.source), ());
                }
            }
            let (key, joules) = match role {
                Role::Charge { key, joules, .. } => (Some(key), joules),
                // An actor's series for its corrections only where there are any: the sampler and
                // the unattributed rest are the counter's line, not series of their own.
                Role::Counter { key, correction, .. } => (key.filter(|_| correction != 0.0), correction),
                Role::Alert(_) => (None, 0.0),
                Role::Other => return,
            };
            any = true;
            (first, last) = (first.min(ns), last.max(ns));
            if let Some(key) = key {
                // Bounded: keys beyond the first thousands only add to "others".
                if totals.len() < 10_000 || totals.contains_key(key) {
                    *totals.entry(key.to_owned()).or_default() += joules.abs();
                } else {
                    *totals.entry(OTHERS.to_owned()).or_default() += joules.abs();
                }
            }
        })?;
        if !any {
            bail!("{}: the audit log has no requests, alerts or attribution entries to plot", path.display());
        }
        let mut ranked: Vec<(String, f64)> = totals.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let drawn: Vec<String> = ranked.iter().take(MAX_SERIES).map(|(k, _)| k.clone()).collect();
        let others = ranked.len() > MAX_SERIES;

        // Pass 2: sums per stretch.
        let span_ns = (last - first).max(1);
        let stretch = |ns: i64| (((ns - first) as i128 * points as i128) / span_ns as i128).clamp(0, points as i128 - 1) as usize;
        let names: Vec<String> = drawn.iter().cloned().chain(others.then(|| OTHERS.to_owned())).collect();
        let index = |key: &str| names.iter().position(|n| n == key).or(others.then_some(names.len().saturating_sub(1)));
        let mut charged = vec![vec![0.0f64; points]; names.len()];
        let mut denied = vec![vec![0u64; points]; names.len()];
        let mut measured = vec![0.0f64; points];
        let mut has_counter = false;
        let mut alerts: BTreeMap<(usize, String), u64> = BTreeMap::new();
        each_entry(path, |entry| {
            let at = stretch(ns(entry));
            match role(entry, by) {
                Role::Charge { key, joules, denied: refused } => {
                    if let Some(i) = index(key) {
                        charged[i][at] += joules;
                        denied[i][at] += u64::from(refused);
                    }
                }
                Role::Counter { key, correction, measured: share } => {
                    has_counter = true;
                    measured[at] += share;
                    if let Some(i) = key.and_then(index) {
                        charged[i][at] += correction;
                    }
                }
                Role::Alert(level) => {
                    let level = if matches!(level, "warning" | "critical" | "info") { level } else { "alert" };
                    *alerts.entry((at, level.to_owned())).or_default() += 1;
                }
                Role::Other => {}
            }
        })?;
        let seconds = span_ns as f64 / 1e9;
        let end_of = |b: usize| seconds * (b + 1) as f64 / points as f64;
        let cumulative = |sums: &[f64]| -> Vec<(f64, f64)> {
            let mut total = 0.0;
            std::iter::once((0.0, 0.0))
                .chain(sums.iter().enumerate().map(|(b, s)| {
                    total += s;
                    (end_of(b), total)
                }))
                .collect()
        };
        let series = names
            .iter()
            .zip(charged.iter().zip(&denied))
            .map(|(name, (sums, refused))| {
                let points = cumulative(sums);
                let denied = refused.iter().enumerate().filter(|(_, n)| **n > 0).map(|(b, n)| (points[b + 1].0, points[b + 1].1, *n)).collect();
                Series { name: name.clone(), points, denied }
            })
            .collect();
        let counter = has_counter.then(|| Series { name: "measured by the energy counter".into(), points: cumulative(&measured), denied: Vec::new() });
        let alerts = alerts.into_iter().map(|((b, level), count)| AlertMark { at: end_of(b), level, count }).collect();
        Ok(Plot { series, counter, alerts, span: seconds, joules_from: joules_from.into_keys().collect() })
    }

    /// Draws it as an SVG at `out`.
    pub fn draw(&self, out: &Path, title: &str) -> Result<()> {
        use plotters::prelude::*;
        let (low, high) = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold((0.0f64, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let high = if high - low > 0.0 { high + (high - low) * 0.08 } else { low + 1.0 };
        let counter_top = self.counter.as_ref().map(|c| c.points.last().map_or(0.0, |p| p.1)).unwrap_or(0.0).max(1e-9) * 1.05;
        let span = self.span.max(1e-9);
        let root = SVGBackend::new(out, (960, 600)).into_drawing_area();
        let drawn = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(16)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .right_y_label_area_size(if self.counter.is_some() { 70 } else { 0 })
                .build_cartesian_2d(0.0..span, low..high)?
                .set_secondary_coord(0.0..span, 0.0..counter_top);
            chart.configure_mesh().x_desc("seconds since the first entry").y_desc("joules charged (cumulative)").draw()?;
            if self.counter.is_some() {
                chart.configure_secondary_axes().y_desc("joules measured (cumulative)").draw()?;
            }
            for (i, series) in self.series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(series.points.iter().copied(), color.stroke_width(2)))?
                    .label(series.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart.draw_series(series.denied.iter().map(|&(x, y, _)| Cross::new((x, y), 4, RED.stroke_width(1))))?;
            }
            if let Some(counter) = &self.counter {
                chart
                    .draw_secondary_series(LineSeries::new(counter.points.iter().copied(), BLACK.stroke_width(2)))?
                    .label(counter.name.clone())
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
            }
            for alert in &self.alerts {
                let color = match alert.level.as_str() {
                    "critical" => RED,
                    "warning" => RGBColor(230, 140, 0),
                    _ => GREEN,
                };
                chart.draw_series(std::iter::once(TriangleMarker::new((alert.at, high), 5, color.filled())))?;
            }
            if self.series.iter().any(|s| !s.denied.is_empty()) {
                chart.draw_series(std::iter::empty::<Cross<(f64, f64), i32>>())?.label("refused (x)").legend(|(x, y)| Cross::new((x + 9, y), 4, RED));
            }
            if !self.alerts.is_empty() {
                chart
                    .draw_series(std::iter::empty::<TriangleMarker<(f64, f64), i32>>())?
                    .label("alerts (triangles: warning, critical, info)")
                    .legend(|(x, y)| TriangleMarker::new((x + 9, y), 5, RED.filled()));
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
            root.present()?;
            Ok(())
        };
        drawn().map_err(|e| anyhow::anyhow!("{}: cannot draw the plot: {e}", out.display()))
    }
}

fn ns(entry: &AuditEntry) -> i64 {
    entry.ts.to_datetime().timestamp_nanos_opt().unwrap_or(0)
}
