//! `--plot`: SVG pictures a person reads at a glance. Sizes and rank
//! counts are powers of two, so the x axis is their base-2 logarithm, and
//! its ticks fall on powers of two labelled `1 KiB`, `1 MiB`, ...; the
//! legend sits in a column of its own, off the data.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::measure::Row;

type Fallible = Result<(), Box<dyn std::error::Error>>;

/// Named lines of (x, y) points, in first-seen order.
#[derive(Default)]
struct Series(Vec<(String, Vec<(f64, f64)>)>);

impl Series {
    fn push(&mut self, name: String, x: f64, y: f64) {
        match self.0.iter_mut().find(|s| s.0 == name) {
            Some(s) => s.1.push((x, y)),
            None => self.0.push((name, vec![(x, y)])),
        }
    }
    fn names(&self) -> Vec<String> {
        self.0.iter().map(|s| s.0.clone()).collect()
    }
}

/// A measured sweep: bus bandwidth against message size, ringfuse's rows
/// and `MPI_Allreduce`'s; below, where MPI ran, each row's speedup over
/// it (its time over ours).
pub fn sizes(path: &Path, title: &str, rows: &[Row]) -> Fallible {
    let mut busbw = Series::default();
    let mut speedup = Series::default();
    let mut mpi_seen = Vec::new();
    let several = rows.iter().any(|r| r.asked != rows[0].asked);
    for r in rows.iter().filter(|r| r.bytes > 0) {
        let name = if several { format!("ringfuse {} {}", r.codec, r.asked) } else { format!("ringfuse {}", r.codec) };
        let x = (r.bytes as f64).log2();
        busbw.push(name.clone(), x, r.busbw_gbps);
        if let Some(t) = r.mpi_time_us {
            speedup.push(name, x, t / r.time_us);
            if !mpi_seen.contains(&r.bytes) {
                mpi_seen.push(r.bytes);
                busbw.push("MPI_Allreduce".into(), x, r.busbw_gbps * r.time_us / t);
            }
        }
    }
    let root = SVGBackend::new(path, (1000, if speedup.0.is_empty() { 520 } else { 820 })).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (plots, legend) = root.split_horizontally(760);
    let names = busbw.names();
    if speedup.0.is_empty() {
        panel(&plots, &busbw, &names, "message size", "bus bandwidth (GB/s)", bytes_label, 0.0)?;
    } else {
        let (top, bottom) = plots.split_vertically(470);
        panel(&top, &busbw, &names, "message size", "bus bandwidth (GB/s)", bytes_label, 0.0)?;
        panel(&bottom, &speedup, &names, "message size", "speedup over MPI_Allreduce (x)", bytes_label, 1.0)?;
    }
    draw_legend(&legend, &names)?;
    root.present()?;
    Ok(())
}

/// `--simulate`: predicted bus bandwidth against rank count, one line per
/// codec and algorithm, at the sweep's largest size.
pub fn ranks(path: &Path, rows: &[Row]) -> Fallible {
    let size = rows.iter().map(|r| r.bytes).max().unwrap_or(0);
    let mut series = Series::default();
    for r in rows.iter().filter(|r| r.bytes == size) {
        series.push(format!("{} {}", r.codec, r.asked), (r.ranks.unwrap_or(1) as f64).log2(), r.busbw_gbps);
    }
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "ringfuse allreduce: predicted bus bandwidth at {} (scale model)",
        bytes_label((size.max(1) as f64).log2(),)
    );
    let root = root.titled(&title, ("sans-serif", 20))?;
    let (plot, legend) = root.split_horizontally(760);
    let names = series.names();
    panel(&plot, &series, &names, "ranks", "bus bandwidth (GB/s)", count_label, 0.0)?;
    draw_legend(&legend, &names)?;
    root.present()?;
    Ok(())
}

/// One chart: lines against log2(x), y from 0 (and through `mark`, a
/// dashed reference line, where it is above 0).
fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    series: &Series,
    names: &[String],
    x_desc: &str,
    y_desc: &str,
    x_label: fn(f64) -> String,
    mark: f64,
) -> Fallible {
    let xs = || series.0.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let xmin = xs().fold(f64::INFINITY, f64::min).floor();
    let xmax = xs().fold(f64::NEG_INFINITY, f64::max).ceil().max(xmin + 1.0);
    let ymax = series.0.iter().flat_map(|s| s.1.iter().map(|p| p.1)).fold(mark.max(0.1), f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(60)
        .build_cartesian_2d(xmin..xmax, 0.0..ymax)?;
    // Ticks at whole powers of two, every second one when there are many.
    let span = (xmax - xmin) as usize;
    let labels = if span > 14 { span / 2 + 1 } else { span + 1 };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(labels)
        .x_label_formatter(&|x| if x.fract() == 0.0 { x_label(*x) } else { String::new() })
        .draw()?;
    if mark > 0.0 {
        chart.draw_series(DashedLineSeries::new([(xmin, mark), (xmax, mark)], 6, 4, BLACK.mix(0.6).stroke_width(1)))?;
    }
    for (name, pts) in &series.0 {
        let color = color_of(names, name);
        chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    Ok(())
}

/// A line's colour: by its place in the legend, so both panels agree.
fn color_of(names: &[String], name: &str) -> RGBAColor {
    let i = names.iter().position(|n| n == name).unwrap_or(names.len());
    if name == "MPI_Allreduce" {
        BLACK.to_rgba()
    } else {
        Palette99::pick(i).to_rgba()
    }
}

fn draw_legend(area: &DrawingArea<SVGBackend, Shift>, names: &[String]) -> Fallible {
    for (i, name) in names.iter().enumerate() {
        let y = 60 + 26 * i as i32;
        let color = color_of(names, name);
        area.draw(&PathElement::new(vec![(8, y), (34, y)], color.stroke_width(3)))?;
        area.draw(&Text::new(name.clone(), (42, y - 8), ("sans-serif", 15)))?;
    }
    Ok(())
}

/// `10` -> `1 KiB`: 2^e bytes in binary units.
fn bytes_label(e: f64) -> String {
    let e = e as i32;
    match e {
        e if e < 10 => format!("{} B", 1u64 << e.max(0)),
        e if e < 20 => format!("{} KiB", 1u64 << (e - 10)),
        e if e < 30 => format!("{} MiB", 1u64 << (e - 20)),
        e => format!("{} GiB", 1u64 << (e - 30).min(62)),
    }
}

/// `6` -> `64`: 2^e as a count.
fn count_label(e: f64) -> String {
    format!("{}", 1u64 << (e as i32).clamp(0, 62))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_ticks_read_as_binary_units() {
        let got: Vec<String> = [3.0, 10.0, 13.0, 20.0, 28.0, 30.0].into_iter().map(bytes_label).collect();
        assert_eq!(got, ["8 B", "1 KiB", "8 KiB", "1 MiB", "256 MiB", "1 GiB"]);
        assert_eq!(count_label(12.0), "4096");
    }
}
