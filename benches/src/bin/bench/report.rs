//! The results of a run: one row per figure, printed as a Markdown table and written as JSON,
//! with the chart of latency against offered load as SVG (plotters).

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// `ingest`, `pipeline`, `latency`, `memory`, ...
    pub part: String,
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The target, as the issue states it, if there is one.
    pub target: Option<String>,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
    /// The figure this one is compared with, measured in the same run, and value / anchor.
    pub anchor: Option<(String, f64)>,
}

/// A latency curve: offered load against p50 and p99.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// e.g. "single events".
    pub label: String,
    /// `(offered per second, p50 ms, p99 ms)`.
    pub points: Vec<(f64, f64, f64)>,
}

/// Everything measured in one run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The figures, in the order measured.
    pub figures: Vec<Figure>,
    /// Latency curves for the chart.
    pub curves: Vec<Curve>,
}

impl Report {
    /// Adds a figure without a target or anchor.
    pub fn add(&mut self, part: &str, name: &str, value: f64, unit: &str) -> &mut Figure {
        self.figures.push(Figure {
            part: part.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            target: None,
            met: None,
            anchor: None,
        });
        let last = self.figures.len() - 1;
        &mut self.figures[last]
    }

    /// The Markdown table.
    pub fn markdown(&self) -> String {
        let mut text = String::from(
            "| part | figure | value | target | met | vs anchor |\n|---|---|---:|---|---|---|\n",
        );
        for f in &self.figures {
            let value = if f.value.abs() >= 100.0 {
                format!("{:.0} {}", f.value, f.unit)
            } else {
                format!("{:.2} {}", f.value, f.unit)
            };
            let met = match f.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let anchor = f
                .anchor
                .as_ref()
                .map(|(name, ratio)| format!("{ratio:.2}x {name}"))
                .unwrap_or_default();
            text.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                f.part,
                f.name,
                value,
                f.target.as_deref().unwrap_or(""),
                met,
                anchor
            ));
        }
        text
    }

    /// Writes `results.md`, `results.json` and, if there are curves, `latency.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        if !self.curves.is_empty() {
            self.chart(&dir.join("latency.svg"))?;
        }
        Ok(())
    }

    fn chart(&self, path: &Path) -> anyhow::Result<()> {
        let xs = || {
            self.curves
                .iter()
                .flat_map(|c| c.points.iter().map(|p| p.0))
        };
        let ys = || {
            self.curves
                .iter()
                .flat_map(|c| c.points.iter().flat_map(|p| [p.1, p.2]))
        };
        let (min_x, max_x) = (xs().fold(f64::MAX, f64::min), xs().fold(1.0_f64, f64::max));
        let (min_y, max_y) = (ys().fold(f64::MAX, f64::min), ys().fold(1.0_f64, f64::max));
        let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Ingest gateway: latency against offered load",
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(
                (min_x * 0.7..max_x * 1.4).log_scale(),
                ((min_y * 0.5).max(0.01)..max_y * 2.0).log_scale(),
            )
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc("offered requests per second")
            .y_desc("latency (ms)")
            .draw()
            .map_err(chart_error)?;
        let palette = [BLUE, RED, GREEN, MAGENTA];
        for (index, curve) in self.curves.iter().enumerate() {
            let color = palette[index % palette.len()];
            for (quantile, style) in [
                ("p50", color.stroke_width(1)),
                ("p99", color.stroke_width(3)),
            ] {
                let points: Vec<(f64, f64)> = curve
                    .points
                    .iter()
                    .map(|p| (p.0, if quantile == "p50" { p.1 } else { p.2 }.max(0.01)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), style))
                    .map_err(chart_error)?
                    .label(format!("{} {quantile}", curve.label))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                chart
                    .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(chart_error)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
        Ok(())
    }
}

fn chart_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error}")
}
