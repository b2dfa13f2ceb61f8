//! The `RINGFUSE_*` environment variables, read once and strictly.
//!
//! Why strictly: a typo that falls back to a default runs a different job
//! from the one asked for (`RINGFUSE_TIMEOUT_MS=abc` used to mean 300 s,
//! `RINGFUSE_CHECKSUM=yes` left checksums off). Every variable is parsed
//! when the process makes its first communicator, and a value that is not
//! accepted fails that communicator's creation with [`Error::Setting`],
//! naming the variable, the value and what is accepted. An empty value
//! counts as unset, as in most shells' `VAR= command`.
//!
//! Read once: the values hold for the whole process, so a communicator
//! made later cannot disagree with one made earlier.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::cpu::wire_stores::WireStores;
use crate::error::{Error, Result};
use crate::transport::fault::Fault;

use super::opts::Algorithm;

/// The longest deadline accepted for a single wait (`RINGFUSE_TIMEOUT_MS`
/// and [`super::AllreduceOpts::timeout`]): seven days. Longer is a hang by
/// another name, and `Instant + Duration` must not overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where `Algorithm::Auto` gets its constants (`RINGFUSE_TUNING`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TuningSource {
    /// The fixed rule ([`crate::tuning::rule`]): the same choice in every
    /// run. The default.
    #[default]
    Rule,
    /// Measured at start-up: may choose differently from run to run.
    Probe,
    /// Read from this file, or measured and written there when it does not
    /// hold constants for this many ranks.
    File(PathBuf),
}

/// Which carrier MPI communicators use (`RINGFUSE_TRANSPORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// Shared memory when every rank is on one host, else MPI.
    #[default]
    Auto,
    /// Shared memory, with a warning where it cannot be had.
    Shm,
    /// MPI point-to-point always.
    Mpi,
}

/// Every `RINGFUSE_*` setting, as parsed; `None` where unset.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `RINGFUSE_TIMEOUT_MS`.
    pub timeout: Option<Duration>,
    /// `RINGFUSE_ALGO`.
    pub algorithm: Option<Algorithm>,
    /// `RINGFUSE_CHECKSUM`.
    pub checksum: Option<bool>,
    /// `RINGFUSE_VERIFY_CALLS`.
    pub verify_calls: Option<bool>,
    /// `RINGFUSE_TUNING`.
    pub tuning: TuningSource,
    /// `RINGFUSE_TRANSPORT`.
    pub transport: TransportChoice,
    /// `RINGFUSE_WIRE_STORES`.
    pub wire_stores: Option<WireStores>,
    /// `RINGFUSE_FAULT`.
    pub fault: Option<Fault>,
    /// `RINGFUSE_FLIGHT_SIGNAL`: install the `SIGUSR1` dump (default off).
    pub flight_signal: bool,
    /// `RINGFUSE_FLIGHT_ON_ERROR`: dump the flight record when a
    /// collective fails (default on).
    pub flight_on_error: bool,
    /// `RINGFUSE_NO_SIMD`: the scalar kernels only (default off).
    pub no_simd: bool,
}

/// The process's settings, parsed on first use.
pub fn settings() -> Result<&'static Settings> {
    static SETTINGS: OnceLock<std::result::Result<Settings, Error>> = OnceLock::new();
    match SETTINGS.get_or_init(|| Settings::parse(|k| std::env::var_os(k))) {
        Ok(s) => Ok(s),
        Err(e) => Err(e.clone()),
    }
}

/// [`settings`], with an error naming `rank` (the rank that reads them).
pub(crate) fn settings_for(rank: usize) -> Result<&'static Settings> {
    settings().map_err(|e| match e {
        Error::Setting { name, value, expected, .. } => Error::Setting { rank: Some(rank), name, value, expected },
        e => e,
    })
}

/// Whether `RINGFUSE_FLIGHT_ON_ERROR` leaves error dumps on (its default
/// when the settings could not be read: no communicator exists then).
pub(crate) fn flight_on_error() -> bool {
    settings().map_or(true, |s| s.flight_on_error)
}

fn bad(name: &'static str, value: &str, expected: &str) -> Error {
    Error::Setting { rank: None, name: name.into(), value: value.into(), expected: expected.into() }
}

fn flag(name: &'static str, v: &str) -> Result<bool> {
    match v {
        "1" | "true" | "on" => Ok(true),
        "0" | "false" | "off" => Ok(false),
        _ => Err(bad(name, v, "1, true, on, 0, false or off")),
    }
}

impl Settings {
    /// Parses the variables `get` returns (the environment, or a test's
    /// map).
    pub fn parse(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Settings> {
        let var = |name: &'static str| -> Result<Option<String>> {
            match get(name) {
                None => Ok(None),
                Some(v) if v.is_empty() => Ok(None),
                Some(v) => v.into_string().map(Some).map_err(|v| bad(name, &v.to_string_lossy(), "valid UTF-8")),
            }
        };
        let mut s = Settings { flight_on_error: true, ..Settings::default() };
        if let Some(v) = var("RINGFUSE_TIMEOUT_MS")? {
            let expected = format!("whole milliseconds from 1 to {}", MAX_TIMEOUT.as_millis());
            let ms: u64 = v.parse().map_err(|_| bad("RINGFUSE_TIMEOUT_MS", &v, &expected))?;
            if ms == 0 || ms as u128 > MAX_TIMEOUT.as_millis() {
                return Err(bad("RINGFUSE_TIMEOUT_MS", &v, &expected));
            }
            s.timeout = Some(Duration::from_millis(ms));
        }
        if let Some(v) = var("RINGFUSE_ALGO")? {
            s.algorithm = Some(
                Algorithm::parse(&v)
                    .ok_or_else(|| bad("RINGFUSE_ALGO", &v, "auto, ring, doubling, tree, hd or hier"))?,
            );
        }
        if let Some(v) = var("RINGFUSE_CHECKSUM")? {
            s.checksum = Some(flag("RINGFUSE_CHECKSUM", &v)?);
        }
        if let Some(v) = var("RINGFUSE_VERIFY_CALLS")? {
            s.verify_calls = Some(flag("RINGFUSE_VERIFY_CALLS", &v)?);
        }
        if let Some(v) = var("RINGFUSE_TUNING")? {
            s.tuning = match v.as_str() {
                "off" | "rule" => TuningSource::Rule,
                "probe" => TuningSource::Probe,
                // A path must look like one, so a misspelt keyword
                // ("prob") is an error, not a file rank 0 writes.
                p if p.contains('/') || p.ends_with(".json") => TuningSource::File(PathBuf::from(p)),
                _ => {
                    return Err(bad(
                        "RINGFUSE_TUNING",
                        &v,
                        "off, probe, or a file path containing '/' or ending in .json",
                    ))
                }
            };
        }
        if let Some(v) = var("RINGFUSE_TRANSPORT")? {
            s.transport = match v.as_str() {
                "auto" => TransportChoice::Auto,
                "shm" => TransportChoice::Shm,
                "mpi" => TransportChoice::Mpi,
                _ => return Err(bad("RINGFUSE_TRANSPORT", &v, "auto, shm or mpi")),
            };
        }
        if let Some(v) = var("RINGFUSE_WIRE_STORES")? {
            s.wire_stores = Some(
                WireStores::parse(&v).ok_or_else(|| bad("RINGFUSE_WIRE_STORES", &v, "cached, streaming or auto"))?,
            );
        }
        if let Some(v) = var("RINGFUSE_FAULT")? {
            s.fault = Some(v.parse::<Fault>().map_err(|e| {
                bad("RINGFUSE_FAULT", &v, &format!("KIND[=ARG]@RANK:MSG with KIND delay=DURATION, drop, duplicate, truncate, corrupt, corrupt-header, kill, exit or sigkill ({e})"))
            })?);
        }
        if let Some(v) = var("RINGFUSE_FLIGHT_SIGNAL")? {
            s.flight_signal = flag("RINGFUSE_FLIGHT_SIGNAL", &v)?;
        }
        if let Some(v) = var("RINGFUSE_FLIGHT_ON_ERROR")? {
            s.flight_on_error = flag("RINGFUSE_FLIGHT_ON_ERROR", &v)?;
        }
        if let Some(v) = var("RINGFUSE_NO_SIMD")? {
            s.no_simd = flag("RINGFUSE_NO_SIMD", &v)?;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::parse(|k| map.get(k).map(Into::into))
    }

    #[test]
    fn every_variable_rejects_what_it_does_not_accept_by_name_and_value() {
        for (name, value) in [
            ("RINGFUSE_TIMEOUT_MS", "abc"),
            ("RINGFUSE_TIMEOUT_MS", "0"),
            ("RINGFUSE_TIMEOUT_MS", "-5"),
            ("RINGFUSE_TIMEOUT_MS", "18446744073709551615"),
            ("RINGFUSE_ALGO", "xyz"),
            ("RINGFUSE_CHECKSUM", "yes"),
            ("RINGFUSE_VERIFY_CALLS", "2"),
            ("RINGFUSE_TUNING", "prob"),
            ("RINGFUSE_TRANSPORT", "tcp"),
            ("RINGFUSE_WIRE_STORES", "fast"),
            ("RINGFUSE_FAULT", "drop@x:1"),
            ("RINGFUSE_FLIGHT_SIGNAL", "please"),
            ("RINGFUSE_FLIGHT_ON_ERROR", "never"),
            ("RINGFUSE_NO_SIMD", "yes"),
        ] {
            let e = parse(&[(name, value)]).expect_err(&format!("{name}={value} must be refused"));
            let msg = e.to_string();
            assert!(msg.contains(name) && msg.contains(value), "{msg} must name {name} and {value}");
            assert!(msg.contains("expected"), "{msg} must say what is accepted");
        }
    }

    #[test]
    fn accepted_values_and_defaults() {
        let s = parse(&[]).unwrap();
        assert_eq!((s.timeout, s.algorithm, s.checksum, s.tuning.clone()), (None, None, None, TuningSource::Rule));
        assert!(!s.flight_signal && s.flight_on_error && !s.no_simd);
        let s = parse(&[
            ("RINGFUSE_TIMEOUT_MS", "1500"),
            ("RINGFUSE_ALGO", "tree"),
            ("RINGFUSE_CHECKSUM", "on"),
            ("RINGFUSE_TUNING", "/tmp/t.json"),
            ("RINGFUSE_TRANSPORT", "mpi"),
            ("RINGFUSE_FAULT", "kill@1:3"),
            ("RINGFUSE_FLIGHT_SIGNAL", "1"),
            ("RINGFUSE_ALGO_UNRELATED", "ignored"),
        ])
        .unwrap();
        assert_eq!(s.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.algorithm, Some(Algorithm::Tree));
        assert_eq!(s.checksum, Some(true));
        assert_eq!(s.tuning, TuningSource::File("/tmp/t.json".into()));
        assert_eq!(s.transport, TransportChoice::Mpi);
        assert!(s.fault.is_some() && s.flight_signal);
        assert_eq!(parse(&[("RINGFUSE_TUNING", "probe")]).unwrap().tuning, TuningSource::Probe);
        assert_eq!(parse(&[("RINGFUSE_ALGO", "")]).unwrap().algorithm, None, "empty is unset");
    }
}
