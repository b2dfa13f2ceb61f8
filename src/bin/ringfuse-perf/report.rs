//! Output: the nccl-tests-style table on stdout, and JSON, CSV and an SVG
//! plot on request.

use std::path::Path;

use plotters::prelude::*;

use crate::measure::Row;

pub fn header(collective: &str, n: usize, dtype: &str, op: &str, host: &str, carrier: &str) {
    println!("# ringfuse-perf: {collective}, {n} ranks, dtype {dtype}, op {op}, host {host}, carrier {carrier}");
    println!("# time: median over iterations of the slowest rank; busbw as nccl-tests defines it");
    println!(
        "# {:>11} {:>11} {:>10} {:>8} {:>10} {:>8} {:>8} {:>11} {:>11} {:>6} {:>5} {:>10} {:>7}",
        "bytes",
        "count",
        "codec",
        "algo",
        "time_us",
        "algbw",
        "busbw",
        "wire_bytes",
        "max_rel_err",
        "wrong",
        "ident",
        "mpi_us",
        "speedup"
    );
    println!(
        "# {:>11} {:>11} {:>10} {:>8} {:>10} {:>8} {:>8} {:>11}",
        "", "(elements)", "", "", "", "(GB/s)", "(GB/s)", "(rank 0)"
    );
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

pub fn row(r: &Row) {
    println!(
        "  {:>11} {:>11} {:>10} {:>8} {:>10.1} {:>8.3} {:>8.3} {:>11} {:>11} {:>6} {:>5} {:>10} {:>7}",
        r.bytes,
        r.count,
        r.codec,
        r.algo,
        r.time_us,
        r.algbw_gbps,
        r.busbw_gbps,
        r.wire_bytes,
        r.max_rel_err.map_or("-".into(), |e| format!("{e:.2e}")),
        opt(r.wrong),
        r.identical.map_or("-", |i| if i { "yes" } else { "NO" }),
        r.mpi_time_us.map_or("-".into(), |t| format!("{t:.1}")),
        r.speedup.map_or("-".into(), |s| format!("{s:.2}x")),
    );
}

/// What a `--json` file says about the run beside its rows.
#[derive(serde::Serialize)]
pub struct RunInfo<'a> {
    pub ranks: usize,
    pub host: &'a str,
    pub carrier: &'a str,
    pub slice_bytes: usize,
    /// Untimed and timed calls per row, so `--simulate --compare` can
    /// replay the same calls where a link's token bucket makes them differ.
    pub warmup: usize,
    pub iters: usize,
}

pub fn json(path: &Path, run: &RunInfo<'_>, rows: &[Row]) -> std::io::Result<()> {
    let mut doc = serde_json::to_value(run)?;
    doc["rows"] = serde_json::to_value(rows)?;
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
}

pub fn csv(path: &Path, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = csv::Writer::from_path(path)?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

/// Bus bandwidth against size (log scale), one line per codec (and
/// algorithm, where a sweep ran several) and one for MPI's own collective.
pub fn plot(path: &Path, title: &str, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let mut series = Series::default();
    let mut mpi_seen = Vec::new();
    let several = rows.iter().any(|r| r.asked != rows[0].asked);
    for r in rows.iter().filter(|r| r.bytes > 0) {
        let name = if several { format!("ringfuse {} {}", r.codec, r.asked) } else { format!("ringfuse {}", r.codec) };
        series.push(name, r.bytes as f64, r.busbw_gbps);
        if let Some(t) = r.mpi_time_us.filter(|_| !mpi_seen.contains(&r.bytes)) {
            mpi_seen.push(r.bytes);
            series.push("MPI".into(), r.bytes as f64, r.busbw_gbps * r.time_us / t);
        }
    }
    draw(path, title, "message size (bytes)", &series.0)
}

/// `--simulate`: predicted bus bandwidth against rank count (log scale),
/// one line per codec and algorithm, at the sweep's largest size.
pub fn plot_ranks(path: &Path, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    let size = rows.iter().map(|r| r.bytes).max().unwrap_or(0);
    let mut series = Series::default();
    for r in rows.iter().filter(|r| r.bytes == size) {
        series.push(format!("{} {}", r.codec, r.asked), r.ranks.unwrap_or(1) as f64, r.busbw_gbps);
    }
    let title = format!("ringfuse allreduce, predicted busbw at {} (scale model)", human(size as f64));
    draw(path, &title, "ranks", &series.0)
}

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
}

/// Lines against a log-scale x axis, bus bandwidth up.
fn draw(
    path: &Path,
    title: &str,
    x_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let xs = || series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let xmax = xs().fold(2.0, f64::max);
    let xmin = xs().filter(|&b| b > 0.0).fold(xmax, f64::min);
    let ymax = series.iter().flat_map(|s| s.1.iter().map(|p| p.1)).fold(0.1, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((xmin..xmax * 1.01).log_scale(), 0.0..ymax)?;
    chart.configure_mesh().x_desc(x_desc).y_desc("bus bandwidth (GB/s)").x_label_formatter(&|x| human(*x)).draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

/// `--simulate`'s tables: the measured table's columns, one table per
/// rank count (error and MPI columns empty: nothing ran).
pub fn sim_table(args: &crate::cli::Args, rows: &[Row]) {
    model_line(args);
    for &n in &args.ranks {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.ranks == Some(n)).collect();
        if let Some(first) = mine.first() {
            header("allreduce (predicted)", n, first.dtype, first.op, "simulated", "model");
            mine.into_iter().for_each(row);
        }
    }
}

/// The scale model's constants, as a comment line.
pub fn model_line(args: &crate::cli::Args) {
    let cpus = match args.cpus {
        0 => "a core per rank".to_string(),
        c => format!("{c} cores shared by all ranks"),
    };
    println!(
        "# scale model: {} ranks per host; network {:.0} us + {:.3} GB/s per host, burst {} B; \
         shared memory {:.1} us + {:.1} GB/s per rank; kernel {:.1} GB/s; {:.1} us CPU per message end, {:.1} us per call, {cpus}",
        args.ranks_per_host,
        args.link_latency * 1e6,
        args.link_rate / 1e9,
        args.link_burst,
        args.shm_latency * 1e6,
        args.shm_rate / 1e9,
        args.reduce_rate as f64 / 1e9,
        args.overhead * 1e6,
        args.call_latency * 1e6,
    );
}

fn human(b: f64) -> String {
    match b {
        b if b >= (1u64 << 30) as f64 => format!("{}G", b / (1u64 << 30) as f64),
        b if b >= (1 << 20) as f64 => format!("{}M", b / (1 << 20) as f64),
        b if b >= 1024.0 => format!("{}K", b / 1024.0),
        b => format!("{b}"),
    }
}
