//! `Algorithm::Auto`'s default choice: a fixed rule, a pure function of
//! the job's layout, so the same inputs give the same bits in every run.
//!
//! Why not the probe by default: the algorithms sum in different orders,
//! so they round differently, and a probe that times them at start-up
//! decides close calls by noise. Three runs of one job (`mpirun -np 3`,
//! f32 sum, 10,007 elements) gave three different results that way. NCCL
//! decides the same way for the same reason: its tuner is a cost model
//! with built-in constants, not a measurement.
//!
//! The rule: recursive doubling (`log2 n` rounds, each moving the whole
//! buffer) up to a crossover, the ring (`2(n-1)` rounds, each moving
//! `1/n` of it) above. The ring's extra rounds cost latency in proportion
//! to the ranks, so the crossover is a number of bytes per rank, one per
//! kind of link:
//!
//! | link | bytes per rank | measured crossover (wire bytes) |
//! |---|---|---|
//! | shared memory, a core per rank | 512 | 2 ranks: 512 B-2 KiB |
//! | shared memory, ranks outnumber cores | 32 KiB | 4 ranks on 2 cores: 32-512 KiB |
//! | network (ranks on several hosts) | 4 KiB | 4 hosts: 4-32 KiB; 8 hosts: 32-256 KiB |
//!
//! The crossovers are this project's measurements (2-core VM, Open MPI
//! 4.1.4, `ci/netsim.sh` at 1 Gbit/s; `docs/results/auto-rule.md`): on
//! those runs the rule put `Auto` within 1.10 of the best fixed algorithm
//! at least as often as the start-up probe did. On other machines
//! `RINGFUSE_TUNING=probe` measures instead (it may then pick differently
//! from run to run), and `RINGFUSE_TUNING=<file>` measures once and keeps
//! every later run's choices, and so its bits, the same.

/// The kind of link a communicator's messages cross, for [`doubling_up_to`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkClass {
    /// Every rank on one host, each with a core of its own.
    SharedMemory,
    /// Every rank on one host, more ranks than cores: every round waits
    /// for the scheduler to hand a core over, and the ring has the most.
    Oversubscribed,
    /// Ranks on more than one host.
    Network,
}

impl LinkClass {
    /// Wire bytes per rank below which recursive doubling beats the ring.
    pub const fn bytes_per_rank(self) -> usize {
        match self {
            LinkClass::SharedMemory => 512,
            LinkClass::Oversubscribed => 32 << 10,
            LinkClass::Network => 4 << 10,
        }
    }

    /// The class of a job of `ranks` ranks, `per_host` of them on each host
    /// (0: unknown, taken as one host), whose host is oversubscribed or not.
    pub fn of(ranks: usize, per_host: usize, oversubscribed: bool) -> LinkClass {
        if per_host != 0 && per_host < ranks {
            LinkClass::Network
        } else if oversubscribed {
            LinkClass::Oversubscribed
        } else {
            LinkClass::SharedMemory
        }
    }
}

/// Wire bytes up to which `Auto` runs recursive doubling (the ring above)
/// on `ranks` ranks over `link`, where no tuning is loaded.
pub fn doubling_up_to(link: LinkClass, ranks: usize) -> usize {
    link.bytes_per_rank().saturating_mul(ranks.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crossover_grows_with_the_ranks_and_the_cost_of_a_round() {
        assert_eq!(doubling_up_to(LinkClass::SharedMemory, 2), 1024);
        assert_eq!(doubling_up_to(LinkClass::Oversubscribed, 4), 128 << 10);
        assert_eq!(doubling_up_to(LinkClass::Network, 4), 16 << 10);
        assert_eq!(doubling_up_to(LinkClass::Network, 8), 32 << 10);
        assert_eq!(doubling_up_to(LinkClass::Network, usize::MAX), usize::MAX, "saturates");
        assert_eq!(LinkClass::of(8, 4, true), LinkClass::Network, "several hosts: the network decides");
        assert_eq!(LinkClass::of(4, 4, true), LinkClass::Oversubscribed);
        assert_eq!(LinkClass::of(4, 0, false), LinkClass::SharedMemory, "hosts unknown: one host");
    }
}
