//! Output: the nccl-tests-style table on stdout, JSON and CSV (the plot
//! is `plot.rs`).

use std::path::Path;

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
