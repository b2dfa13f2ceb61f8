//! How the survivors of a lost rank agree on who is lost, over whatever
//! board their carrier gives them to post a word to and read each
//! other's (shared-memory mailboxes, the liveness connections between
//! hosts).
//!
//! Why this suffices: a carrier's detector is perfect. A process that
//! exited shows through its pidfd or its closed connection, a carrier
//! that was dropped through its life line, and neither comes back; no
//! live rank is ever suspected. So flooding is enough: each survivor
//! posts the set it knows (and the highest mark it has seen) and takes in
//! every other survivor's, and decides when every rank outside its set
//! posted that same word. Two survivors cannot decide differently: a rank
//! that decided never posts a larger set, so another can only decide one
//! without it by seeing it dead. A rank that sees a decision adopts it,
//! even if it saw a later death since: the new carrier then fails its
//! first collective naming that rank, and the survivors shrink again.

use super::Deadline;

/// A survivor still proposing.
pub(crate) const PROPOSE: u64 = 1;
/// A survivor that decided: its word is final.
pub(crate) const DECIDED: u64 = 2;

/// What a survivor posts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Word {
    /// Which shrink of this lineage of carriers (words of another are
    /// stale).
    pub epoch: u64,
    /// [`PROPOSE`] or [`DECIDED`].
    pub phase: u64,
    /// Per old rank: lost.
    pub lost: Vec<bool>,
    /// The largest of the survivors' marks it has seen (the MPI carrier's
    /// first unused tag), agreed like the set.
    pub mark: u64,
}

/// Where the survivors post and read words.
pub(crate) trait Board {
    /// Posts this rank's word for every other rank to read.
    fn post(&mut self, w: &Word);
    /// Rank `p`'s latest word, if it posted one.
    fn read(&mut self, p: usize) -> Option<Word>;
    /// Whether rank `p` is gone.
    fn gone(&mut self, p: usize) -> bool;
}

/// Agrees with every survivor among `size` ranks on the lost set (at
/// least `lost`, and every rank seen gone) and the largest mark (at least
/// `mark`). Returns the decided word.
pub(crate) fn agree(
    b: &mut dyn Board,
    me: usize,
    epoch: u64,
    mut lost: Vec<bool>,
    mark: u64,
    deadline: &mut Deadline,
) -> Result<Word, String> {
    let n = lost.len();
    for p in (0..n).filter(|&p| p != me) {
        lost[p] |= b.gone(p);
    }
    let mut mine = Word { epoch, phase: PROPOSE, lost, mark };
    b.post(&mine);
    let decided = loop {
        if mine.lost[me] {
            return Err(format!("rank {me}: another survivor counts this rank lost"));
        }
        if deadline.passed() {
            let waiting: Vec<usize> = (0..n).filter(|&p| p != me && !mine.lost[p]).collect();
            return Err(format!(
                "rank {me}: the survivors did not agree on the lost ranks in time; \
                 this rank knows {:?} lost and waited on ranks {waiting:?} to say the same",
                indices(&mine.lost)
            ));
        }
        match round(b, me, &mut mine) {
            Round::Adopt(w) => break w,
            Round::Grew => b.post(&mine),
            Round::Agreed => break mine,
            Round::Wait => std::thread::yield_now(),
        }
    };
    if decided.lost[me] {
        return Err(format!("rank {me}: the survivors decided that this rank is lost"));
    }
    let decided = Word { phase: DECIDED, ..decided };
    b.post(&decided);
    Ok(decided)
}

enum Round {
    /// A survivor decided this word.
    Adopt(Word),
    /// This rank learned more.
    Grew,
    /// Every survivor posted this rank's word.
    Agreed,
    /// Some survivor has not said the same yet.
    Wait,
}

/// One look at every survivor's word, taking in what it knows.
fn round(b: &mut dyn Board, me: usize, mine: &mut Word) -> Round {
    let (mut grew, mut same) = (false, true);
    let epoch = mine.epoch;
    for p in 0..mine.lost.len() {
        if p == me || mine.lost[p] {
            continue;
        }
        let mut word = b.read(p).filter(|w| w.epoch == epoch);
        if b.gone(p) {
            // Read again after seeing it gone: a survivor posts its
            // decision before it drops its old carrier, so the decision
            // shows now if it made one.
            word = b.read(p).filter(|w| w.epoch == epoch);
            if word.as_ref().is_none_or(|w| w.phase != DECIDED) {
                mine.lost[p] = true;
                grew = true;
                continue;
            }
        }
        match word {
            Some(w) if w.phase == DECIDED => return Round::Adopt(w),
            Some(w) => {
                for (q, &l) in w.lost.iter().enumerate() {
                    if l && !mine.lost[q] {
                        mine.lost[q] = true;
                        grew = true;
                    }
                }
                if w.mark > mine.mark {
                    mine.mark = w.mark;
                    grew = true;
                }
                same &= w.lost == mine.lost && w.mark == mine.mark;
            }
            None => same = false,
        }
    }
    if grew {
        Round::Grew
    } else if same {
        Round::Agreed
    } else {
        Round::Wait
    }
}

/// The ranks set in `set`, lowest first.
pub(crate) fn indices(set: &[bool]) -> Vec<usize> {
    set.iter().enumerate().filter(|(_, &l)| l).map(|(p, _)| p).collect()
}
