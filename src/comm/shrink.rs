//! Going on without lost ranks: [`Communicator::shrink`].

use std::time::Instant;

use super::*;
use crate::transport::Deadline;

impl Communicator {
    /// A communicator over the ranks of this one that are still alive,
    /// for every survivor to call after a collective failed with
    /// [`Error::PeerLost`]. Collective over the survivors.
    ///
    /// The survivors agree on which ranks are lost (every one gets the
    /// same set, also when another rank dies during the agreement) and get
    /// a communicator with ranks renumbered in their old order, the
    /// layout and `Auto`'s rule recomputed for the new size, and fresh
    /// message files, so nothing of this communicator can be taken for a
    /// message of the new one. This one stays poisoned. Every survivor
    /// held the same bits after every finished collective, so what they
    /// computed from those results is still identical: no checkpoint is
    /// needed to go on (the interrupted call must be run again on the new
    /// communicator; its buffer may hold partial results,
    /// [`Error::buffer`]).
    ///
    /// Over shared memory and over MPI (up to 128 ranks, where the MPI
    /// carrier keeps a liveness connection to every peer); in-process
    /// ranks (`ringfuse::local`) fail with [`Error::Shrink`]. Under
    /// `mpirun`, launch with `--enable-recovery` so that the launcher does
    /// not end the survivors when a rank dies (docs/guide/debugging.md).
    ///
    /// # Errors
    /// [`Error::Shrink`] when the carrier cannot shrink or the survivors
    /// did not agree within the deadline ([`AllreduceOpts::timeout`] of
    /// [`Self::defaults`]); errors of setting up the new communicator.
    pub fn shrink(&self) -> Result<Communicator> {
        let started = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut deadline = Deadline::after(self.defaults.timeout);
        let shrunk =
            st.transport.shrink(&[], &mut deadline).map_err(|detail| Error::Shrink { rank: self.rank, detail })?;
        let size = shrunk.transport.size();
        st.poisoned = Some(format!("shrunk to {size} ranks: use the communicator shrink() returned"));
        drop(st);
        // Shared memory holds every rank on one host; elsewhere the layout
        // is not known after a loss.
        let per_host = if self.ranks_per_host == self.size { size } else { 0 };
        let mut c = Self::tuned_only(shrunk.transport, per_host)?;
        c.defaults = self.defaults.clone();
        c.lost_ranks = shrunk.lost;
        tracing::warn!(
            "rank {} is rank {} of {} survivors, {:?} lost (shrunk in {:.1?})",
            self.rank,
            c.rank,
            c.size,
            c.lost_ranks,
            started.elapsed()
        );
        Ok(c)
    }

    /// The ranks of the communicator this one was [shrunk](Self::shrink)
    /// from that were lost, lowest first (empty for a first communicator).
    /// The survivors keep their order: new rank `r` is the old rank that is
    /// the `r`-th not in this list.
    pub fn lost_ranks(&self) -> &[usize] {
        &self.lost_ranks
    }
}
