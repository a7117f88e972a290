//! Overlay plots of runs' curves (PNG, or SVG when the path ends in .svg); a log
//! y axis where the values span more than a decade.

use super::diff::{Metric, Run};
use anyhow::{anyhow, bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Typical val RMSE of a net that predicts the average face on the Kaggle data.
const MEAN_FACE_PX: f64 = 4.0;

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Embedded DejaVu Sans: plots render the same on machines without fonts.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

pub fn plot(runs: &[Run], m: Metric, out: &Path) -> Result<()> {
    register_font();
    let svg = out.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let size = (960, 600);
    // Drawn to a temp file and renamed: a failed plot leaves an older one whole.
    crate::run::atomic_write(out, |tmp| {
        if svg {
            draw(&SVGBackend::new(tmp, size).into_drawing_area(), runs, m)
        } else {
            draw(&BitMapBackend::new(tmp, size).into_drawing_area(), runs, m)
        }
    })
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[Run], m: Metric) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("cannot draw the plot: {e:?}");
    // With val RMSE also show train RMSE (fainter): the gap is the overfitting.
    let companion = match m {
        Metric::ValRmse => Some(Metric::TrainRmse),
        Metric::ValLoss => Some(Metric::TrainLoss),
        _ => None,
    };
    let all: Vec<(i64, f64)> = runs
        .iter()
        .flat_map(|r| r.series(m).into_iter().chain(companion.map(|c| r.series(c)).unwrap_or_default()))
        .filter(|p| p.1.is_finite() && p.1 > 0.0)
        .collect();
    if all.is_empty() {
        bail!("the runs have no {} values to plot", m.name());
    }
    let x_max = all.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let (lo, hi) = all.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    root.fill(&WHITE).map_err(err)?;
    let title = format!("fkpnet: {}", m.name());
    let mut builder = ChartBuilder::on(root);
    builder.caption(title, ("sans-serif", 24)).margin(16).x_label_area_size(44).y_label_area_size(72);
    let colours = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("iteration")
                .y_desc(m.name())
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(err)?;
            if m == Metric::ValRmse && runs.iter().all(Run::is_kaggle) && (lo..=hi).contains(&MEAN_FACE_PX) {
                chart
                    .draw_series(LineSeries::new(
                        [(0.0, MEAN_FACE_PX), (x_max, MEAN_FACE_PX)],
                        ShapeStyle::from(&RGBColor(150, 150, 150)).stroke_width(1),
                    ))
                    .map_err(err)?
                    .label("mean-face plateau (~4 px)")
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(150, 150, 150)));
            }
            for (i, r) in runs.iter().enumerate() {
                let c = colours[i % colours.len()];
                if let Some(comp) = companion {
                    let pts: Vec<(f64, f64)> = r
                        .series(comp)
                        .into_iter()
                        .filter(|p| p.1 > 0.0)
                        .map(|(x, y)| (x as f64, y))
                        .collect();
                    chart.draw_series(LineSeries::new(pts, c.mix(0.35).stroke_width(1))).map_err(err)?;
                }
                let pts: Vec<(f64, f64)> =
                    r.series(m).into_iter().filter(|p| p.1 > 0.0).map(|(x, y)| (x as f64, y)).collect();
                chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(err)?
                    .label(match companion {
                        Some(comp) => format!("{} ({}; faint: {})", r.name, m.name(), comp.name()),
                        None => r.name.clone(),
                    })
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }};
    }
    if hi / lo > 10.0 {
        body!(builder.build_cartesian_2d(0.0..x_max, (lo * 0.9..hi * 1.1).log_scale()).map_err(err)?);
    } else {
        let pad = (hi - lo).max(1e-9) * 0.05;
        body!(builder.build_cartesian_2d(0.0..x_max, (lo - pad).max(0.0)..hi + pad).map_err(err)?);
    }
    root.present().map_err(err)?;
    Ok(())
}
