//! Whether a hop writes its message through the cache or streams it
//! (non-temporal stores), chosen by timing both while the job runs.
//!
//! Over shared memory the peer reads each message in place, from another
//! core, and the slot it read is written again a few messages later. When
//! the two cores share a last-level cache an ordinary store is cheapest.
//! When they do not (a VM whose host moves its vCPUs between chiplets or
//! sockets, for seconds at a time), every ordinary store must first take
//! its line back from the reader's cache across the fabric. Measured on
//! this project's 2-vCPU EPYC VM (2026-11-26, a C program handing a 256
//! KiB message back and forth, the round-trip of a spin flag telling the
//! placements apart: 0.12 us sharing an L3, 0.35 us not):
//!
//! | placement | writes, cached | writes, streamed | round trip, cached | streamed |
//! |---|---|---|---|---|
//! | sharing an L3 | 4.5 us | 9.3 us | 22.6 us | 36.0 us |
//! | not sharing one | 96.6 us | 9.5 us | 219 us | 35.7 us |
//!
//! The host changes the placement under a running job, so one choice per
//! job would be wrong half the time. The first hops of the schedules
//! (`encode`: this rank's own values onto the wire) are timed with each
//! kind of store, as a running cost per KiB; the other hops follow what
//! they show. Only `encode` is timed because it reads nothing another rank
//! wrote: a hop that reduces a received message pays for how the *peer*
//! wrote it too, which blurs the comparison (timing every hop chose
//! streaming for the last reduce-scatter hop of a 2-rank ring sharing an
//! L3, and 1 MiB calls took 104 us instead of 56). Streaming also costs
//! the reader (from memory instead of a cache next door), which the
//! writer's clock does not see, so it is chosen only when it writes at
//! least [`MARGIN`] times faster: 0.5x sharing an L3, 10x not. Every
//! [`EXPLORE_EVERY`] one `encode` tries the store not in use, so a change
//! of placement is noticed within milliseconds. Each wire width (16-, 32-
//! and 64-bit) keeps its own costs, as `ringfuse-perf` interleaves codecs
//! whose costs per KiB differ.
//!
//! The store in use keeps a running cost over every hop, not just the
//! tries, because a cached write's cost depends on how the slot was last
//! written: right after streaming, the slot's lines are in no other cache
//! and a cached write is cheap (100 ns/KiB at 16 MiB apart), while in a
//! run of cached writes it costs 450-590. A version that compared only
//! neighbouring pairs of hops, one per store, read that transient, went
//! back to cached stores every other pair and left 16 MiB native calls
//! apart at 5-10 ms instead of 2.6. Here a try of cached that looks cheap
//! switches to it, and its own next hops, costing what cached writes cost
//! in a run, switch back within a few. Streaming writes the same
//! bits, so ranks may choose differently without changing any result.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::Stores;

/// Messages with fewer wire bytes are written through the cache, untimed:
/// the clock would cost more than the choice can save.
pub(crate) const MIN_BYTES: usize = 4 << 10;

/// For its first [`WARM_HOPS`] timed hops a width tries the other store
/// every [`WARM_EVERY`]th hop, so the first call's cold hops (page faults,
/// empty caches) do not decide a whole run of short calls.
pub(crate) const WARM_HOPS: u32 = 32;
/// See [`WARM_HOPS`].
pub(crate) const WARM_EVERY: u32 = 4;

/// How often each kind of hop tries the store it is not using.
pub(crate) const EXPLORE_EVERY: Duration = Duration::from_millis(10);

/// A sample counts at most this many times the running cost, so one
/// preempted hop cannot flip the choice by itself.
const CLAMP: f32 = 4.0;

/// Streaming is chosen when `encode` writes this many times faster with it.
pub(crate) const MARGIN: f32 = 2.0;

/// The kinds of hop that write a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireHop {
    /// `encode`: the first hop, which is timed.
    Encode,
    /// A hop that reduces a received message and writes the result.
    Reduce,
}

/// Who decides the stores: fixed, or timed ([`WireStores::Auto`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireStores {
    /// Always through the cache (carriers whose peers do not read the
    /// message in place from another core).
    Cached,
    /// Always streamed.
    Streaming,
    /// Timed per hop kind, as the module says.
    Auto,
}

impl WireStores {
    /// `cached`, `streaming` or `auto`, as `RINGFUSE_WIRE_STORES` takes it.
    pub fn name(self) -> &'static str {
        match self {
            WireStores::Cached => "cached",
            WireStores::Streaming => "streaming",
            WireStores::Auto => "auto",
        }
    }

    /// Parses `cached`, `streaming` or `auto` (`RINGFUSE_WIRE_STORES`).
    pub fn parse(v: &str) -> Option<WireStores> {
        match v {
            "cached" => Some(WireStores::Cached),
            "streaming" => Some(WireStores::Streaming),
            "auto" => Some(WireStores::Auto),
            _ => None,
        }
    }
}

/// A communicator's choice of wire stores, kept from call to call.
pub(crate) struct WireChooser {
    mode: WireStores,
    /// One per wire width: 2, 4 and 8 bytes per element.
    arms: [Cell<Arm>; 3],
}

impl WireChooser {
    pub(crate) fn new(mode: WireStores) -> Self {
        let arm = Cell::new(Arm::new(Instant::now()));
        WireChooser { mode, arms: [arm.clone(), arm.clone(), arm] }
    }

    fn arm(&self, width: usize) -> &Cell<Arm> {
        &self.arms[width.trailing_zeros().clamp(1, 3) as usize - 1]
    }

    /// Runs `write` (a kernel writing `bytes` of wire, `width` bytes per
    /// element) with the stores chosen for it, timing it when it is an
    /// `encode`, which decides.
    #[inline]
    pub(crate) fn write<R>(&self, hop: WireHop, width: usize, bytes: usize, write: impl FnOnce(Stores) -> R) -> R {
        match self.mode {
            WireStores::Cached => write(Stores::Cached),
            WireStores::Streaming => write(Stores::Streaming),
            WireStores::Auto if bytes < MIN_BYTES => write(Stores::Cached),
            WireStores::Auto if hop == WireHop::Reduce => write(self.arm(width).get().current()),
            WireStores::Auto => {
                let cell = self.arm(width);
                let mut arm = cell.get();
                let start = Instant::now();
                let stores = arm.pick(start);
                let r = write(stores);
                let ns = start.elapsed().as_nanos() as f32;
                arm.record(stores, ns * 1024.0 / bytes as f32, start);
                cell.set(arm);
                r
            }
        }
    }

    /// The stores the hops of `width`-byte wires use now.
    #[cfg(test)]
    pub(crate) fn current(&self, width: usize) -> Stores {
        self.arm(width).get().current()
    }
}

/// One wire width's running costs (ns per KiB; NaN until measured),
/// indexed by [`idx`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arm {
    cost: [f32; 2],
    /// Timed hops so far, up to [`WARM_HOPS`].
    hops: u32,
    /// When the store not in use was last tried.
    tried: Instant,
}

fn idx(s: Stores) -> usize {
    match s {
        Stores::Cached => 0,
        Stores::Streaming => 1,
    }
}

fn of(i: usize) -> Stores {
    if i == 0 {
        Stores::Cached
    } else {
        Stores::Streaming
    }
}

impl Arm {
    pub(crate) fn new(now: Instant) -> Self {
        Arm { cost: [f32::NAN; 2], hops: 0, tried: now }
    }

    /// Streaming if it writes [`MARGIN`] times faster by the running
    /// costs; cached until both are known.
    pub(crate) fn current(&self) -> Stores {
        if self.cost[1] * MARGIN < self.cost[0] {
            Stores::Streaming
        } else {
            Stores::Cached
        }
    }

    /// The store the next `encode` uses: the first two measure one each,
    /// then [`Self::current`], except for one try of the other every
    /// [`WARM_EVERY`]th hop while warming up and every [`EXPLORE_EVERY`].
    pub(crate) fn pick(&self, now: Instant) -> Stores {
        if self.cost[0].is_nan() {
            return Stores::Cached;
        }
        if self.cost[1].is_nan() {
            return Stores::Streaming;
        }
        let cur = self.current();
        let warm_try = self.hops < WARM_HOPS && self.hops % WARM_EVERY == WARM_EVERY - 1;
        if warm_try || now.saturating_duration_since(self.tried) >= EXPLORE_EVERY {
            of(1 - idx(cur))
        } else {
            cur
        }
    }

    /// Files a hop's cost per KiB. The store in use moves its cost by an
    /// eighth of each sample; a try moves the other's by half, as it comes
    /// only every [`EXPLORE_EVERY`].
    pub(crate) fn record(&mut self, used: Stores, ns_per_kib: f32, now: Instant) {
        self.hops = (self.hops + 1).min(WARM_HOPS);
        let i = idx(used);
        let trying = !self.cost[1 - i].is_nan() && used != self.current();
        let old = self.cost[i];
        self.cost[i] = if old.is_nan() {
            ns_per_kib
        } else {
            let x = ns_per_kib.min(old * CLAMP);
            let w = if trying { 0.5 } else { 0.125 };
            old + w * (x - old)
        };
        if trying {
            self.tried = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `arm` one hop at `t`: whichever store it picks costs `cost`
    /// of that store. Returns the store used.
    fn hop(arm: &mut Arm, t: Instant, cost: [f32; 2]) -> Stores {
        let s = arm.pick(t);
        arm.record(s, cost[idx(s)], t);
        s
    }

    /// An arm past its warm-up, so only the interval brings tries.
    fn warmed(t: Instant) -> Arm {
        Arm { hops: WARM_HOPS, ..Arm::new(t) }
    }

    #[test]
    fn while_warming_up_every_fourth_hop_tries_the_other_store() {
        let t0 = Instant::now();
        let mut arm = Arm::new(t0);
        let used: Vec<Stores> = (0..40).map(|_| hop(&mut arm, t0, [20.0, 40.0])).collect();
        let tries: Vec<usize> = (2..40).filter(|&i| used[i] == Stores::Streaming).collect();
        assert_eq!(used[..2], [Stores::Cached, Stores::Streaming]);
        assert_eq!(tries, vec![3, 7, 11, 15, 19, 23, 27, 31], "{used:?}");
    }

    #[test]
    fn it_measures_both_then_keeps_the_cheaper_and_tries_the_other_every_interval() {
        let t0 = Instant::now();
        let mut arm = warmed(t0);
        let near = [20.0, 40.0];
        assert_eq!(hop(&mut arm, t0, near), Stores::Cached);
        assert_eq!(hop(&mut arm, t0, near), Stores::Streaming);
        // Within an interval every hop stays cached.
        for k in 1..100 {
            assert_eq!(hop(&mut arm, t0 + Duration::from_micros(k * 90), near), Stores::Cached);
        }
        // Past it, one try of streaming, then cached again.
        let t1 = t0 + EXPLORE_EVERY;
        assert_eq!(hop(&mut arm, t1, near), Stores::Streaming);
        assert_eq!(hop(&mut arm, t1, near), Stores::Cached);
        assert_eq!(arm.current(), Stores::Cached);
    }

    #[test]
    fn a_change_of_placement_flips_the_choice_within_a_few_hops_and_back_within_a_few_tries() {
        let t0 = Instant::now();
        let mut arm = warmed(t0);
        let (near, far) = ([20.0, 40.0], [400.0, 40.0]);
        hop(&mut arm, t0, near);
        hop(&mut arm, t0, near);
        // The cores move apart: cached hops now cost 20x. The clamp lets
        // each raise the cost by at most 4x an eighth, and streaming must
        // be 2x cheaper: it takes 5 hops (20, 27.5, 38, 52, 71, 98 > 80).
        let mut flipped = None;
        for k in 0..10 {
            if hop(&mut arm, t0, far) == Stores::Streaming {
                flipped = Some(k);
                break;
            }
        }
        assert_eq!(flipped, Some(5), "{arm:?}");
        assert_eq!(arm.current(), Stores::Streaming);
        // They move back: streaming stays until tries of cached (one per
        // interval, each moving its cost half way) bring it below 40.
        let mut t = t0;
        let mut tries = 0;
        while arm.current() == Stores::Streaming {
            t += EXPLORE_EVERY;
            if hop(&mut arm, t, near) == Stores::Cached {
                tries += 1;
            }
            assert!(tries < 10, "{arm:?}");
        }
        // One try halves cached's distance to 20: 59, no longer twice
        // streaming's 40.
        assert_eq!(tries, 1, "{arm:?}");
    }

    #[test]
    fn one_preempted_hop_does_not_flip_the_choice() {
        let t0 = Instant::now();
        let mut arm = warmed(t0);
        hop(&mut arm, t0, [20.0, 40.0]);
        hop(&mut arm, t0, [20.0, 40.0]);
        hop(&mut arm, t0, [1e6, 40.0]); // a hop that lost the core for a while
        assert_eq!(arm.current(), Stores::Cached, "{arm:?}");
    }

    #[test]
    fn small_messages_and_fixed_modes_do_not_time_and_each_width_decides_alone() {
        let auto = WireChooser::new(WireStores::Auto);
        let untimed = |c: &WireChooser, w: usize| c.arm(w).get().cost[0].is_nan();
        assert_eq!(auto.write(WireHop::Encode, 2, MIN_BYTES - 1, |s| s), Stores::Cached);
        assert!(untimed(&auto, 2));
        assert_eq!(auto.write(WireHop::Reduce, 2, MIN_BYTES, |s| s), Stores::Cached);
        assert!(untimed(&auto, 2));
        assert_eq!(auto.write(WireHop::Encode, 2, MIN_BYTES, |s| s), Stores::Cached);
        assert_eq!(auto.write(WireHop::Encode, 2, MIN_BYTES, |s| s), Stores::Streaming);
        assert!(untimed(&auto, 4), "the 32-bit wire keeps its own costs");
        // Reduce hops take the choice, never a try.
        let mut arm = auto.arm(2).get();
        arm.cost = [100.0, 10.0];
        auto.arm(2).set(arm);
        assert_eq!(auto.write(WireHop::Reduce, 2, MIN_BYTES, |s| s), Stores::Streaming);
        assert_eq!(auto.current(2), Stores::Streaming);
        assert_eq!(auto.current(4), Stores::Cached);
        let fixed = WireChooser::new(WireStores::Streaming);
        assert_eq!(fixed.write(WireHop::Encode, 4, 1, |s| s), Stores::Streaming);
        assert!(untimed(&fixed, 4));
    }

    #[test]
    fn a_cheap_try_of_cached_right_after_streaming_is_undone_by_the_hops_after_it() {
        let mut t = Instant::now();
        let mut arm = warmed(t);
        let far = [500.0, 75.0];
        hop(&mut arm, t, far);
        hop(&mut arm, t, far);
        assert_eq!(arm.current(), Stores::Streaming);
        // Each try of cached finds its slot in no other cache and costs
        // 100; each halves cached's distance to it (500, 300, 200, 150),
        // so the third, no longer above twice 75, switches to cached...
        let mut tries = 0;
        while arm.current() == Stores::Streaming {
            t += EXPLORE_EVERY;
            assert_eq!(hop(&mut arm, t, [100.0, 75.0]), Stores::Cached);
            tries += 1;
            assert!(tries < 10, "{arm:?}");
        }
        assert_eq!(tries, 3, "{arm:?}");
        // ...and cached writes in a run cost 500 again: back at once.
        let mut back = 0;
        while hop(&mut arm, t, far) == Stores::Cached {
            back += 1;
            assert!(back < 10, "{arm:?}");
        }
        assert_eq!(back, 1, "{arm:?}");
    }
}
