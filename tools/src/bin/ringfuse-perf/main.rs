//! `ringfuse-perf`: nccl-tests-style bandwidth tables for ringfuse's
//! collectives, with MPI's own collective timed side by side on the same
//! data, the wire bytes, and each codec's measured error.
//!
//! ```text
//! mpirun -np 2 target/release/ringfuse-perf -b 1K -e 256M -c native,fp16 --plot busbw.svg
//! ```

mod aligned;
mod cli;
mod compare;
mod device;
mod gpu_cluster;
mod inputs;
mod measure;
mod nccl_model;
mod plot;
mod report;
mod simulate;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use ringfuse::{DType, Element, ReduceOp};

use cli::{Args, Baseline, CollectiveArg, DeviceArg};
use device::DeviceRun;
use measure::{measure, MpiFn, Row};

fn mpi_op(op: ReduceOp) -> SystemOperation {
    match op {
        // MPI has no average; its sum moves the same bytes.
        ReduceOp::Sum | ReduceOp::Avg => SystemOperation::sum(),
        ReduceOp::Min => SystemOperation::min(),
        ReduceOp::Max => SystemOperation::max(),
        ReduceOp::Prod => SystemOperation::product(),
    }
}

/// MPI's own collective for the element types MPI knows.
fn mpi_baseline<'a, E: Element + Equivalence>(world: &'a SimpleCommunicator, args: &Args) -> MpiFn<'a, E> {
    let op = mpi_op(args.op);
    match args.collective {
        CollectiveArg::Allreduce => Box::new(move |s, r| world.all_reduce_into(s, r, op)),
        CollectiveArg::ReduceScatter => Box::new(move |s, r| world.reduce_scatter_block_into(s, r, op)),
        CollectiveArg::Allgather => Box::new(move |s, r| world.all_gather_into(s, r)),
        CollectiveArg::Broadcast => Box::new(move |s, r| {
            if world.rank() == 0 {
                r.copy_from_slice(s);
            }
            world.process_at_rank(0).broadcast_into(r)
        }),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let reduces = matches!(args.collective, CollectiveArg::Allreduce | CollectiveArg::ReduceScatter);
    if let Some(c) = args.codec.iter().find(|c| c.is_block_scaled() && args.check && !reduces) {
        // Their rounding depends on a block, not on the element alone: the
        // per-element check of allgather and broadcast is not written.
        eprintln!("--codec {c} is checked for allreduce and reduce_scatter only; add --check false to time it");
        return ExitCode::FAILURE;
    }
    let mut sizes = Vec::new();
    let mut b = args.min_bytes.max(1);
    while b <= args.max_bytes {
        sizes.push(b as usize);
        b = if args.factor > 1 { b * args.factor } else { b + 1 };
    }
    if args.simulate {
        return simulate_main(&args, &sizes);
    }
    if args.baseline == Baseline::NcclModel || args.gpu_cluster.is_some() {
        eprintln!("--baseline nccl-model and --gpu-cluster are the scale model's: add --simulate");
        return ExitCode::FAILURE;
    }
    let mpi = match ringfuse::mpi::init() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let comm = match mpi.world() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let world = mpi.universe().world();
    let dtype = args.dtype.dtype();
    let mut dev = match args.device {
        DeviceArg::Host => None,
        DeviceArg::Cuda => {
            let ok = args.collective == CollectiveArg::Allreduce
                && matches!(dtype, DType::F32 | DType::F16 | DType::Bf16)
                && args
                    .codec
                    .iter()
                    .all(|c| matches!(c, ringfuse::Codec::Native | ringfuse::Codec::Fp16 | ringfuse::Codec::Bf16));
            if !ok {
                eprintln!("--device cuda: allreduce of f32, f16 or bf16 with codecs native, fp16, bf16 only");
                return ExitCode::FAILURE;
            }
            match DeviceRun::new(comm.rank()) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!("rank {}: {e}", comm.rank());
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let slice_bytes = match args.slice_bytes {
        Some(s) if s > 0 => s as usize,
        _ => comm.message_bytes(comm.defaults()),
    };
    let slots = args.slots.unwrap_or(comm.defaults().slots);
    let lead = comm.rank() == 0;
    let host = mpi::environment::processor_name().unwrap_or_default();
    if lead {
        report::header(args.collective.name(), comm.size(), dtype.name(), args.op.name(), &host, comm.carrier());
        println!(
            "# messages: {} B of payload each (--slice-bytes), {} in flight each way (--slots), stores {} (RINGFUSE_WIRE_STORES)",
            slice_bytes,
            slots,
            comm.wire_stores().name()
        );
        if dev.is_some() {
            println!(
                "# buffers on the GPU (--device cuda): Communicator::allreduce_device, host-staged over {}",
                comm.carrier()
            );
        }
        match comm.tuning() {
            Some(t) => {
                let lines: Vec<String> = (t.lines.iter())
                    .map(|l| {
                        let pts: Vec<String> =
                            l.points.iter().map(|(b, s)| format!("{b} B {:.1} us", s * 1e6)).collect();
                        format!("{} [{}]", l.algo, pts.join(", "))
                    })
                    .collect();
                println!("# auto's cost model (probed in {:.1} ms): {}", t.seconds * 1e3, lines.join("; "));
            }
            None => println!(
                "# auto: the fixed rule (RINGFUSE_TUNING unset or off; the same choice every run): doubling up to {} wire bytes, ring above",
                comm.doubling_up_to()
            ),
        }
    }
    let bar = (lead && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(sizes.len() as u64);
        pb.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} sizes {msg}").expect("template"));
        pb
    });
    let use_mpi = args.baseline == Baseline::Mpi;
    let mut rows: Vec<Row> = Vec::new();
    for (k, &bytes) in sizes.iter().enumerate() {
        let seed = 0x5eed_0000 + k as u64;
        let d = dev.as_mut();
        let new = match dtype {
            DType::F32 => measure::<f32>(&comm, &args, bytes, seed, use_mpi.then(|| mpi_baseline(&world, &args)), d),
            DType::F64 => measure::<f64>(&comm, &args, bytes, seed, use_mpi.then(|| mpi_baseline(&world, &args)), d),
            // MPI has no 16-bit float type: no baseline for these.
            DType::F16 => measure::<half::f16>(&comm, &args, bytes, seed, None, d),
            DType::Bf16 => measure::<half::bf16>(&comm, &args, bytes, seed, None, d),
        };
        if lead {
            if let Some(pb) = &bar {
                pb.suspend(|| new.iter().for_each(report::row));
                pb.inc(1);
            } else {
                new.iter().for_each(report::row);
            }
        }
        rows.extend(new);
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let bad = rows.iter().any(|r| r.wrong.unwrap_or(0) > 0 || r.identical == Some(false));
    if lead {
        let n = comm.size();
        if let Some(p) = &args.json {
            let run = report::RunInfo {
                ranks: n,
                host: &host,
                carrier: comm.carrier(),
                slice_bytes,
                warmup: args.warmup,
                iters: args.iters,
            };
            report::json(p, &run, &rows).unwrap_or_else(|e| eprintln!("--json {}: {e}", p.display()));
        }
        if let Some(p) = &args.csv {
            report::csv(p, &rows).unwrap_or_else(|e| eprintln!("--csv {}: {e}", p.display()));
        }
        if let Some(p) = &args.plot {
            let title = format!("ringfuse {} busbw, {n} ranks, {}", args.collective.name(), dtype.name());
            plot::sizes(p, &title, &rows).unwrap_or_else(|e| eprintln!("--plot {}: {e}", p.display()));
        }
        if bad {
            eprintln!("ringfuse-perf: some rows have elements outside the codec bound or ranks that differ");
        }
    }
    if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `--simulate`: predictions, no MPI.
fn simulate_main(args: &Args, sizes: &[usize]) -> ExitCode {
    if let Some(measured) = &args.compare {
        return match compare::compare(args, measured) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringfuse-perf --simulate --compare: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rows = match simulate::rows(args, sizes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringfuse-perf --simulate: {e}");
            return ExitCode::FAILURE;
        }
    };
    report::sim_table(args, &rows);
    if let Some(p) = &args.json {
        let doc = serde_json::json!({ "ranks": args.ranks, "host": "simulated", "carrier": "model", "rows": rows });
        let text = serde_json::to_string_pretty(&doc).expect("serialisable");
        std::fs::write(p, text).unwrap_or_else(|e| eprintln!("--json {}: {e}", p.display()));
    }
    if let Some(p) = &args.csv {
        report::csv(p, &rows).unwrap_or_else(|e| eprintln!("--csv {}: {e}", p.display()));
    }
    if let Some(p) = &args.plot {
        plot::ranks(p, &rows).unwrap_or_else(|e| eprintln!("--plot {}: {e}", p.display()));
    }
    ExitCode::SUCCESS
}
