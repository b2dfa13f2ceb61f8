//! Loss curves, one line per run (plotters, SVG).

use plotters::prelude::*;

use crate::Run;

pub fn curves(path: &str, runs: &[Run]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let epochs = runs.iter().map(|r| r.curve.len()).max().unwrap_or(1);
    let (lo, hi) =
        runs.iter().flat_map(|r| r.curve.iter().copied()).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let mut chart = ChartBuilder::on(&root)
        .caption("train_mlp: training loss per epoch, by wire codec", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1..epochs, (lo * 0.98)..(hi * 1.02))?;
    chart.configure_mesh().x_desc("epoch").y_desc("cross-entropy (train)").draw()?;
    for (k, r) in runs.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let label = format!("{}{}", r.codec, if r.error_feedback { " + feedback" } else { "" });
        chart
            .draw_series(LineSeries::new(r.curve.iter().enumerate().map(|(e, v)| (e + 1, *v)), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
