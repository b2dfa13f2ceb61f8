//! Output: the nccl-tests-style table on stdout, JSON and CSV (the plot
//! is `plot.rs`).

use std::path::Path;

use crate::measure::Row;

pub fn header(collective: &str, n: usize, dtype: &str, op: &str, host: &str, carrier: &str) {
    header_with(collective, n, dtype, op, host, carrier, "mpi_us");
}

/// The table's header, with `baseline` naming the baseline's time column.
fn header_with(collective: &str, n: usize, dtype: &str, op: &str, host: &str, carrier: &str, baseline: &str) {
    println!("# ringfuse-perf: {collective}, {n} ranks, dtype {dtype}, op {op}, host {host}, carrier {carrier}");
    println!("# time: median over iterations of the slowest rank; busbw as nccl-tests defines it");
    let nccl_algo = if baseline == "nccl_us" { format!(" {:>9}", "nccl_algo") } else { String::new() };
    println!(
        "# {:>11} {:>11} {:>10} {:>8} {:>10} {:>8} {:>8} {:>11} {:>11} {:>6} {:>5} {:>10} {:>7}{nccl_algo}",
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
        baseline,
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
    let line = format!(
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
        r.mpi_time_us.or(r.nccl_model_us).map_or("-".into(), |t| format!("{t:.1}")),
        r.speedup.map_or("-".into(), |s| format!("{s:.2}x")),
    );
    // NCCL's model names the algorithm it picked, in one more column.
    println!("{line}{}", r.nccl_algo.map_or(String::new(), |a| format!(" {a:>9}")));
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
/// rank count (error columns empty: nothing ran; the baseline column is
/// NCCL's model where asked).
pub fn sim_table(args: &crate::cli::Args, rows: &[Row]) {
    model_line(args);
    let baseline = if args.baseline == crate::cli::Baseline::NcclModel { "nccl_us" } else { "mpi_us" };
    for &n in &args.ranks {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.ranks == Some(n)).collect();
        if let Some(first) = mine.first() {
            header_with("allreduce (predicted)", n, first.dtype, first.op, "simulated", "model", baseline);
            mine.into_iter().for_each(row);
        }
    }
}

/// The scale model's constants, as a comment line.
pub fn model_line(args: &crate::cli::Args) {
    if let Some(g) = args.gpu_cluster {
        let c = g.cluster(crate::gpu_cluster::GPUS_PER_NODE);
        println!(
            "# scale model: --gpu-cluster {}: {} GPUs per node; NVLink {:.1} us + {:.1} GB/s per GPU; \
             network {:.1} us + {:.0} GB/s per node; kernel {:.0} GB/s of f32; {:.1} us per call",
            g.name(),
            c.ranks_per_host,
            c.intra.latency_s * 1e6,
            c.intra.bytes_per_s / 1e9,
            c.inter.latency_s * 1e6,
            c.inter.bytes_per_s / 1e9,
            c.reduce_bytes_per_s / 1e9,
            c.call_s * 1e6,
        );
        return;
    }
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
