//! Every collective over MPI, every codec, several sizes (uneven, tiny,
//! empty), every reduce op: each rank checks its own result and the run
//! exits non-zero on the first wrong element. CI runs this under
//! `mpirun -np 1..4`.

use std::process::ExitCode;

use ringfuse::{Codec, Communicator, ReduceOp};

/// Small integers: exact in every codec for up to 4 ranks, so every
/// result can be checked for equality, not within a bound.
fn value(rank: usize, i: usize) -> f32 {
    ((rank * 7 + i * 13) % 17) as f32 - 8.0
}

fn check(comm: &Communicator, what: &str, got: &[f32], want: impl Fn(usize) -> f32) -> Result<(), String> {
    for (i, &g) in got.iter().enumerate() {
        let w = want(i);
        if g != w {
            return Err(format!("rank {}: {what}: element {i} is {g}, want {w}", comm.rank()));
        }
    }
    Ok(())
}

fn run(comm: &Communicator) -> Result<usize, String> {
    let (rank, n) = (comm.rank(), comm.size());
    let mut checks = 0;
    for codec in [Codec::Native, Codec::Fp16, Codec::Bf16] {
        for slice_bytes in [256, 256 << 10] {
            let opts = comm.defaults().clone().codec(codec).slice_bytes(slice_bytes);
            for count in [0usize, 1, 3, 1000, 10_007, 300_001] {
                for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max, ReduceOp::Prod] {
                    let mut buf: Vec<f32> = (0..count).map(|i| value(rank, i)).collect();
                    if op == ReduceOp::Prod {
                        buf.iter_mut().for_each(|x| *x = (*x / 4.0).round().clamp(-2.0, 2.0));
                    }
                    comm.allreduce_with(&mut buf, op, &opts).map_err(|e| e.to_string())?;
                    let inputs = |i: usize| (0..n).map(move |r| value(r, i));
                    let what = format!("allreduce({count}, {op}, {codec}, slice {slice_bytes})");
                    check(comm, &what, &buf, |i| match op {
                        ReduceOp::Sum => inputs(i).sum(),
                        ReduceOp::Avg => {
                            let s: f32 = inputs(i).sum();
                            let v = s / n as f32;
                            // Avg rounds once to the wire after dividing.
                            ringfuse::verify::through_wire(codec, ringfuse::DType::F32, v as f64) as f32
                        }
                        ReduceOp::Min => inputs(i).fold(f32::INFINITY, f32::min),
                        ReduceOp::Max => inputs(i).fold(f32::NEG_INFINITY, f32::max),
                        ReduceOp::Prod => inputs(i).map(|x| (x / 4.0).round().clamp(-2.0, 2.0)).product(),
                    })?;
                    checks += 1;
                }
                // reduce_scatter + allgather over equal blocks.
                let per = count / n.max(1);
                let input: Vec<f32> = (0..per * n).map(|i| value(rank, i)).collect();
                let mut mine = vec![0f32; per];
                comm.reduce_scatter_with(&input, &mut mine, ReduceOp::Sum, &opts).map_err(|e| e.to_string())?;
                check(comm, "reduce_scatter", &mine, |i| (0..n).map(|r| value(r, rank * per + i)).sum())?;
                let mut all = vec![0f32; per * n];
                comm.allgather_with(&mine, &mut all, &opts).map_err(|e| e.to_string())?;
                check(comm, "allgather", &all, |i| (0..n).map(|r| value(r, i)).sum())?;
                // broadcast from the last rank.
                let root = n - 1;
                let mut b: Vec<f32> =
                    if rank == root { (0..count).map(|i| value(root, i)).collect() } else { vec![0.0; count] };
                comm.broadcast_with(&mut b, root, &opts).map_err(|e| e.to_string())?;
                check(comm, "broadcast", &b, |i| value(root, i))?;
                comm.barrier().map_err(|e| e.to_string())?;
                checks += 4;
            }
        }
    }
    Ok(checks)
}

fn main() -> ExitCode {
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
    match run(&comm) {
        Ok(checks) => {
            if comm.rank() == 0 {
                println!("collectives: {} ranks, {checks} checks passed on every rank", comm.size());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
