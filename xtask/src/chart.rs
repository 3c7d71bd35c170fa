//! The boot timeline chart of `bench-boot` (SVG, with plotters): one row
//! per image — kiln's phases as coloured segments of one bar (medians, ms
//! from the moment `kiln run` was spawned), and below it the native run
//! and the container start of the same program for scale.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::bench::{median, PHASES};

/// Row height in chart units: kiln bar, native bar, container bar, label.
const ROW: f64 = 3.0;

/// Draws `doc` (a bench-boot result) into `path`.
///
/// # Errors
/// When plotters cannot draw or write the file.
pub fn timeline(doc: &Value, path: &Path) -> Result<()> {
    let images = doc["images"].as_array().cloned().unwrap_or_default();
    let n = images.len().max(1);
    let walls = |key: &str| -> Vec<f64> {
        images
            .iter()
            .map(|i| median(&i["ms"][key]))
            .filter(|v| v.is_finite())
            .collect()
    };
    let max = walls("kiln_wall")
        .into_iter()
        .chain(walls("native_wall"))
        .chain(walls("container_wall"))
        .fold(1.0f64, f64::max)
        * 1.45; // room on the right for the legend
    let height = 140 + 110 * n as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "kiln boot timeline: medians of {} runs, {} KVM",
        doc["runs"],
        doc["kvm_flavour"].as_str().unwrap_or("?")
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..max, 0f64..(n as f64 * ROW))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("ms since the command was spawned")
        .draw()
        .map_err(|e| err(&e))?;

    // The rows, top to bottom in the order of `images`.
    let base = |i: usize| (n - 1 - i) as f64 * ROW;
    // One series per phase segment, so each gets one legend entry.
    let mut bounds: Vec<Vec<f64>> = Vec::new();
    for img in &images {
        let mut b = vec![0.0];
        for (key, _, _) in PHASES {
            let v = median(&img["ms"][key]);
            let last = *b.last().unwrap_or(&0.0);
            b.push(if v.is_finite() { v.max(last) } else { last });
        }
        let wall = median(&img["ms"]["kiln_wall"]);
        let last = *b.last().unwrap_or(&0.0);
        b.push(if wall.is_finite() {
            wall.max(last)
        } else {
            last
        });
        bounds.push(b);
    }
    let mut labels: Vec<String> = PHASES
        .iter()
        .map(|(_, label, _)| format!("… {label}"))
        .collect();
    labels.push("… exit, VM teardown".into());
    for (k, label) in labels.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let bars: Vec<Rectangle<(f64, f64)>> = bounds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Rectangle::new(
                    [(b[k], base(i) + 1.7), (b[k + 1], base(i) + 2.5)],
                    color.filled(),
                )
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    let grey = RGBColor(120, 120, 120);
    let light = RGBColor(190, 190, 190);
    for (i, img) in images.iter().enumerate() {
        let y = base(i);
        let name = img["name"].as_str().unwrap_or("?");
        let kib = img["image_bytes"].as_u64().unwrap_or(0) / 1024;
        let wall = median(&img["ms"]["kiln_wall"]);
        let native = median(&img["ms"]["native_wall"]);
        let container = median(&img["ms"]["container_wall"]);
        let text = |s: String, x: f64, y: f64, size: u32| {
            Text::new(s, (x, y), ("sans-serif", size).into_font().color(&BLACK))
        };
        chart
            .draw_series([
                text(
                    format!(
                        "{name} ({kib} KiB image): kiln {wall:.2} ms, {:.2}x native, {:.2}x container",
                        wall / native,
                        wall / container
                    ),
                    0.0,
                    y + 2.95,
                    15,
                ),
                text(format!("native {native:.2} ms"), native, y + 1.35, 12),
                text(format!("container {container:.2} ms"), container, y + 0.75, 12),
            ])
            .map_err(|e| err(&e))?;
        chart
            .draw_series([
                Rectangle::new([(0.0, y + 1.1), (native, y + 1.45)], light.filled()),
                Rectangle::new([(0.0, y + 0.5), (container, y + 0.85)], grey.filled()),
            ])
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The chart of `bench-apps` (SVG): one horizontal bar per program, its
/// median kiln/native wall-time ratio, with lines at 1× (native) and at
/// the goal ratio.
///
/// # Errors
/// When plotters cannot draw or write the file.
pub fn ratios(doc: &Value, path: &Path) -> Result<()> {
    let apps = doc["apps"].as_array().cloned().unwrap_or_default();
    let n = apps.len().max(1);
    let goal = doc["goal_ratio"].as_f64().unwrap_or(1.5);
    let ratio = |a: &Value| median(&a["ratio"]);
    let max = apps
        .iter()
        .map(ratio)
        .filter(|v| v.is_finite())
        .fold(goal, f64::max)
        * 1.5; // room on the right for the labels
    let root = SVGBackend::new(path, (1000, 120 + 50 * n as u32)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "kiln vs native wall time (VM boot included): medians of {} paired runs, {} KVM",
        doc["runs"],
        doc["kvm_flavour"].as_str().unwrap_or("?")
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..max, 0f64..n as f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("kiln wall time / native wall time")
        .draw()
        .map_err(|e| err(&e))?;
    let blue = RGBColor(60, 110, 190);
    let red = RGBColor(200, 70, 60);
    for (i, a) in apps.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let r = ratio(a);
        let color = if r <= goal { blue } else { red };
        chart
            .draw_series([Rectangle::new(
                [(0.0, y + 0.2), (r, y + 0.8)],
                color.filled(),
            )])
            .map_err(|e| err(&e))?;
        let label = format!(
            "{}  {r:.2}x  ({:.0} vs {:.0} ms, {:.0} exits)",
            a["name"].as_str().unwrap_or("?"),
            median(&a["kiln_ms"]),
            median(&a["native_ms"]),
            median(&a["exits"]),
        );
        chart
            .draw_series([Text::new(
                label,
                (r + max * 0.01, y + 0.6),
                ("sans-serif", 14).into_font().color(&BLACK),
            )])
            .map_err(|e| err(&e))?;
    }
    for (x, label) in [(1.0, "native"), (goal, "goal")] {
        chart
            .draw_series([PathElement::new(
                vec![(x, 0.0), (x, n as f64)],
                BLACK.stroke_width(1),
            )])
            .map_err(|e| err(&e))?;
        chart
            .draw_series([Text::new(
                label.to_owned(),
                (x + max * 0.005, n as f64 - 0.05),
                ("sans-serif", 12).into_font().color(&BLACK),
            )])
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The chart of `bench-snapshot` (SVG): horizontal bars in ms — the Python
/// program cold-started and resumed, the snapshot pause for each amount
/// of touched memory, HTTP latency without and with a standby, and the
/// failover time.
///
/// # Errors
/// When plotters cannot draw or write the file.
pub fn snapshot(doc: &Value, path: &Path) -> Result<()> {
    let mut bars: Vec<(String, f64)> = vec![
        (
            "Python start-up, cold (kiln run)".into(),
            median(&doc["python"]["cold_ms"]),
        ),
        (
            "Python, resumed, no write set yet (--from-snapshot)".into(),
            median(&doc["python"]["resumed_learning_ms"]),
        ),
        (
            "Python, resumed (--from-snapshot)".into(),
            median(&doc["python"]["resumed_ms"]),
        ),
        (
            "Python, resumed (--snapshot-memory copy)".into(),
            median(&doc["python"]["resumed_copy_ms"]),
        ),
    ];
    for r in doc["sizes"].as_array().into_iter().flatten() {
        bars.push((
            format!("snapshot pause, {} MiB touched", r["touched_mib"]),
            r["pause_ms"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    for r in doc["ha"]["runs"].as_array().into_iter().flatten() {
        if let Some(ms) = r["interval_ms"].as_u64() {
            bars.push((
                format!("HA, {ms} ms checkpoints: HTTP latency p50"),
                r["wrk"]["latency_p50_ms"].as_f64().unwrap_or(f64::NAN),
            ));
        } else {
            bars.push((
                "HTTP latency p50 without a standby".into(),
                r["wrk"]["latency_p50_ms"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    bars.push((
        "failover: kill -9 of the primary to the next answer".into(),
        median(&doc["failover"]["failover_ms"]),
    ));
    let n = bars.len();
    let max = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.6;
    let root = SVGBackend::new(path, (1000, 120 + 45 * n as u32)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "kiln snapshots: Python resumed {:.1}x / {:.1}x (copy) faster than cold; restore to running p50 {:.2} ms ({} KVM)",
        median(&doc["python"]["speedup"]),
        median(&doc["python"]["speedup_copy"]),
        median(&doc["python"]["restore_to_running_ms"]),
        doc["python"]["kvm_flavour"].as_str().unwrap_or("?")
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..max, 0f64..n as f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("ms")
        .draw()
        .map_err(|e| err(&e))?;
    let blue = RGBColor(60, 110, 190);
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let v = if v.is_finite() { *v } else { 0.0 };
        chart
            .draw_series([Rectangle::new(
                [(0.0, y + 0.2), (v, y + 0.8)],
                blue.filled(),
            )])
            .map_err(|e| err(&e))?;
        chart
            .draw_series([Text::new(
                format!("{label}  {v:.1} ms"),
                (v + max * 0.01, y + 0.6),
                ("sans-serif", 14).into_font().color(&BLACK),
            )])
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
