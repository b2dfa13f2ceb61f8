//! Prints one hash per buffer size of an f32 sum with default options, so
//! a script can run the same job several times and compare the bits
//! (`ci/same_bits.sh`). The inputs span many magnitudes, so every
//! algorithm's order of summation rounds differently: a run that chose
//! another algorithm for any size would print another hash.
//!
//! ```text
//! mpirun -np 3 target/release/examples/same_bits
//! ```

use std::process::ExitCode;

use ringfuse::ReduceOp;

/// Element counts: small calls, the sizes around every crossover the rule
/// or a probe could pick, and the 10,007 of the report that found it.
const COUNTS: [usize; 9] = [7, 100, 256, 1000, 4096, 10_007, 32_768, 100_000, 1 << 20];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> ringfuse::Result<()> {
    let mpi = ringfuse::mpi::init()?;
    let comm = mpi.world()?;
    let rank = comm.rank();
    let mut line = Vec::new();
    for count in COUNTS {
        // A deterministic spread of signs and magnitudes (2^-20 to 2^20).
        let mut v: Vec<f32> = (0..count)
            .map(|i| {
                let h = (i as u64 ^ (rank as u64) << 40).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mant = 1.0 + (h >> 40) as f32 / (1u64 << 24) as f32;
                let exp = ((h >> 8) % 41) as i32 - 20;
                let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
                sign * mant * 2f32.powi(exp)
            })
            .collect();
        comm.allreduce(&mut v, ReduceOp::Sum)?;
        let hash =
            v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3));
        let algo = comm.algorithm_for(comm.defaults(), ringfuse::DType::F32, count).name();
        line.push(format!("{count}:{algo}:{hash:016x}"));
    }
    if rank == 0 {
        println!("{}", line.join(" "));
    }
    Ok(())
}
