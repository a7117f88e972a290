//! Overlay plots of runs' curves (PNG, or SVG when the path ends in .svg); a log
//! y axis where the values span more than 3x.

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

/// The plateau line's colour: orange, unlike the grey grid line it may sit on.
const PLATEAU: RGBColor = RGBColor(230, 120, 0);

/// The y range to show: every value, except that the first tenth of the iterations
/// (the untrained net's 18 px) may run off the top when it would squash the rest to
/// a sliver; the axis is logarithmic where the shown values span more than 3x.
fn y_range(points: &[(i64, f64)], x_max: f64) -> (f64, f64) {
    let fold =
        |ps: &mut dyn Iterator<Item = f64>| ps.fold((f64::MAX, f64::MIN), |a, v| (a.0.min(v), a.1.max(v)));
    let (lo, hi) = fold(&mut points.iter().map(|p| p.1));
    let (_, late_hi) = fold(&mut points.iter().filter(|p| p.0 as f64 >= 0.1 * x_max).map(|p| p.1));
    if late_hi > lo && hi > 3.0 * late_hi {
        (lo, late_hi * 1.5)
    } else {
        (lo, hi)
    }
}

/// Labels for a log axis from a to b: 1, 1.5, 2, 3, 4, 5, 6, 8 per decade where they
/// fit in about ten, else 1, 2, 5 (plotters' own labels only the powers of ten, so a
/// 3-20 px axis would show just 10).
fn log_labels(a: f64, b: f64) -> Vec<f64> {
    let pick = |steps: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        let mut decade = 10f64.powf(a.log10().floor());
        while decade <= b {
            out.extend(steps.iter().map(|s| s * decade).filter(|v| (a..=b).contains(v)));
            decade *= 10.0;
        }
        out
    };
    let fine = pick(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]);
    if fine.len() <= 12 {
        fine
    } else {
        pick(&[1.0, 2.0, 5.0])
    }
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
    let (lo, hi) = y_range(&all, x_max);
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
                .x_label_formatter(&|x: &f64| format!("{}", x.round() as i64))
                .y_label_formatter(&|y: &f64| format!("{}", (y * 1000.0).round() / 1000.0))
                .y_labels(12)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(err)?;
            if m == Metric::ValRmse && runs.iter().all(Run::is_kaggle) && (lo..=hi).contains(&MEAN_FACE_PX) {
                chart
                    .draw_series(LineSeries::new(
                        [(0.0, MEAN_FACE_PX), (x_max, MEAN_FACE_PX)],
                        ShapeStyle::from(&PLATEAU).stroke_width(2),
                    ))
                    .map_err(err)?
                    .label("mean-face plateau (~4 px)")
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PLATEAU.stroke_width(2)));
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
    if hi / lo > 3.0 {
        let (a, b) = (lo * 0.9, hi * 1.1);
        let y = (a..b).log_scale().with_key_points(log_labels(a, b));
        body!(builder.build_cartesian_2d(0.0..x_max, y).map_err(err)?);
    } else {
        let pad = (hi - lo).max(1e-9) * 0.05;
        body!(builder.build_cartesian_2d(0.0..x_max, (lo - pad).max(0.0)..hi + pad).map_err(err)?);
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::y_range;

    #[test]
    fn the_untrained_start_does_not_squash_the_curve() {
        // 18 px at iteration 0, then 5 -> 3.5 px: the axis shows 3.5 .. 7.5, not 3.5 .. 18.
        let pts = [(0, 18.0), (20, 5.0), (40, 4.2), (60, 3.8), (80, 3.6), (100, 3.5)];
        assert_eq!(y_range(&pts, 100.0), (3.5, 7.5));
        // Without such a start every value is shown.
        let pts = [(0, 6.0), (50, 4.0), (100, 3.5)];
        assert_eq!(y_range(&pts, 100.0), (3.5, 6.0));
    }

    #[test]
    fn log_axes_get_labels_within_each_decade() {
        assert_eq!(super::log_labels(3.2, 20.0), vec![4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0]);
        assert_eq!(
            super::log_labels(0.01, 20.0),
            vec![0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
        );
    }
}
