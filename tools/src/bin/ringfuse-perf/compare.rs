//! `--simulate --compare FILE`: the scale model against a measured run.
//! Every measured row (a `--json` file of `ringfuse-perf`, e.g. from
//! `ci/netsim.sh`) is predicted with the same rank count, size, codec and
//! algorithm, and the table shows both times and their ratio.

use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;
use ringfuse::{Algorithm, Codec};
use serde_json::Value;

use crate::cli::Args;
use crate::simulate;

/// How far a prediction may be from the measurement and still count as
/// agreeing (issue #7's target for the scale model).
const TOLERANCE: f64 = 0.25;

/// One measured row.
struct Measured {
    bytes: usize,
    codec: Codec,
    algo: Algorithm,
    time_us: f64,
}

fn measured_rows(doc: &Value, dtype: &str) -> Result<Vec<Measured>, String> {
    let rows = doc["rows"].as_array().ok_or("no \"rows\" array")?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let field = |k: &str| r[k].as_str().ok_or(format!("row {i}: no string \"{k}\""));
        if r["collective"].as_str().is_some_and(|c| c != "allreduce") {
            return Err(format!("row {i}: the model predicts allreduce only"));
        }
        if field("dtype")? != dtype {
            return Err(format!("row {i}: dtype {} but --dtype {dtype}", field("dtype")?));
        }
        let codec = Codec::parse(field("codec")?).ok_or(format!("row {i}: unknown codec"))?;
        let algo = Algorithm::parse(field("algo")?).ok_or(format!("row {i}: unknown algo"))?;
        let bytes = r["bytes"].as_u64().ok_or(format!("row {i}: no \"bytes\""))? as usize;
        let time_us = r["time_us"].as_f64().ok_or(format!("row {i}: no \"time_us\""))?;
        // An `auto` row names the algorithm it ran: a second row of one
        // (size, codec, algorithm) measures the same thing again.
        if seen.insert((bytes, codec.name(), algo.name())) {
            out.push(Measured { bytes, codec, algo, time_us });
        }
    }
    Ok(out)
}

/// Prints measured against predicted, row by row, and how many agree.
pub fn compare(args: &Args, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = doc["ranks"].as_u64().ok_or(format!("{}: no \"ranks\" number", path.display()))? as usize;
    let dtype = args.dtype.dtype();
    let rows = measured_rows(&doc, dtype.name()).map_err(|e| format!("{}: {e}", path.display()))?;
    // The run's message size (files from before it was recorded: the
    // default of their day, 256 KiB), unless --slice-bytes overrides it.
    let slice = args.slice_bytes.or(doc["slice_bytes"].as_u64()).unwrap_or(ringfuse::DEFAULT_SLICE_BYTES as u64);
    // Its calls per row (files from before they were recorded: -n and -w).
    let count = |k: &str, default: usize| doc[k].as_u64().map_or(default, |v| v as usize);
    let (warmup, iters) = (count("warmup", args.warmup), count("iters", args.iters));
    let args = &Args { slice_bytes: Some(slice), warmup, iters, ..args.clone() };
    let predicted: Vec<Result<f64, String>> = rows
        .par_iter()
        .map(|m| {
            let one = Args { algo: vec![m.algo], ..args.clone() };
            let p = simulate::point(&one, n, m.bytes, m.codec)?;
            Ok(p.first().ok_or("no prediction")?.time_us)
        })
        .collect();
    crate::report::model_line(args);
    println!("# {n} ranks, {slice} B messages, {warmup} + {iters} calls, measured: {}", path.display());
    println!("#       bytes      codec     algo  measured_us predicted_us  ratio");
    let mut agree = 0;
    for (m, p) in rows.iter().zip(predicted) {
        let p = p?;
        let ratio = p / m.time_us;
        let ok = (ratio - 1.0).abs() <= TOLERANCE;
        agree += usize::from(ok);
        println!(
            "{:>13} {:>10} {:>8} {:>12.1} {:>12.1} {:>6.2}{}",
            m.bytes,
            m.codec.name(),
            m.algo.name(),
            m.time_us,
            p,
            ratio,
            if ok { "" } else { "  *" }
        );
    }
    println!("# within {:.0}%: {agree} of {} rows (* marks the others)", TOLERANCE * 100.0, rows.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::measured_rows;
    use serde_json::json;

    fn row(bytes: u64, algo: &str, t: f64) -> serde_json::Value {
        json!({"collective": "allreduce", "dtype": "f32", "codec": "native", "algo": algo, "bytes": bytes, "time_us": t})
    }

    #[test]
    fn an_auto_row_that_repeats_a_fixed_one_is_taken_once() {
        let doc = json!({"ranks": 4, "rows": [row(8, "ring", 10.0), row(8, "doubling", 5.0), row(8, "doubling", 6.0)]});
        let rows = measured_rows(&doc, "f32").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].algo.name(), rows[1].time_us), ("doubling", 5.0));
    }

    #[test]
    fn rows_the_model_cannot_predict_are_errors_that_name_the_row() {
        let mut other = row(8, "ring", 1.0);
        other["collective"] = json!("broadcast");
        let doc = json!({"rows": [row(8, "ring", 1.0), other]});
        let e = measured_rows(&doc, "f32").err().unwrap();
        assert!(e.contains("row 1") && e.contains("allreduce"), "{e}");
        let e = measured_rows(&json!({"rows": [row(8, "ring", 1.0)]}), "f64").err().unwrap();
        assert!(e.contains("row 0") && e.contains("f64"), "{e}");
        let e = measured_rows(&json!({"rows": [row(8, "sideways", 1.0)]}), "f32").err().unwrap();
        assert!(e.contains("unknown algo"), "{e}");
    }
}
