//! `ringfuse-trace`: merges the flight-recorder dumps of all ranks (the
//! `ringfuse-flight.rank<R>.json` files that `RINGFUSE_FLIGHT_DIR` collects
//! on an error or a `SIGUSR1`) and names the first rank that fell behind.
//!
//! ```text
//! RINGFUSE_FLIGHT_DIR=/tmp/flight mpirun -np 4 ./trainer &
//! kill -USR1 %1          # mpirun passes SIGUSR1 on to every rank
//! ringfuse-trace /tmp/flight
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use ringfuse::flight::{diagnose, FlightDump};

/// Merge ringfuse flight-recorder dumps and name the rank that fell behind.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Dump files, or directories holding `ringfuse-flight.rank*.json`
    /// (default: `$RINGFUSE_FLIGHT_DIR`, else the current directory).
    paths: Vec<PathBuf>,
    /// Also print every rank's whole record (its last collectives).
    #[arg(long)]
    all: bool,
}

fn dump_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("ringfuse-flight.rank") && name.ends_with(".json") {
            files.push(p);
        }
    }
    Ok(files)
}

fn load(paths: &[PathBuf]) -> Result<Vec<FlightDump>, String> {
    let mut dumps: Vec<FlightDump> = Vec::new();
    for path in paths {
        for file in dump_files(path).map_err(|e| format!("{}: {e}", path.display()))? {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let dump: FlightDump =
                serde_json::from_str(&text).map_err(|e| format!("{}: not a flight dump: {e}", file.display()))?;
            if let Some(other) = dumps.iter().find(|d| d.rank == dump.rank) {
                return Err(format!(
                    "{}: a second dump of rank {} (pids {} and {}): mixing runs?",
                    file.display(),
                    dump.rank,
                    other.pid,
                    dump.pid
                ));
            }
            dumps.push(dump);
        }
    }
    dumps.sort_by_key(|d| d.rank);
    Ok(dumps)
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.paths.is_empty() {
        args.paths.push(std::env::var_os("RINGFUSE_FLIGHT_DIR").map_or_else(|| ".".into(), PathBuf::from));
    }
    let dumps = match load(&args.paths) {
        Ok(d) if d.is_empty() => {
            eprintln!("ringfuse-trace: no ringfuse-flight.rank*.json under {:?}", args.paths);
            return ExitCode::FAILURE;
        }
        Ok(d) => d,
        Err(e) => {
            eprintln!("ringfuse-trace: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.all {
        for d in &dumps {
            println!("{d}");
        }
    }
    print!("{}", diagnose(&dumps).report);
    ExitCode::SUCCESS
}
