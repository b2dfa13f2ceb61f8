//! A bounded queue between the caller's thread and the progress thread
//! that allocates only when built. (`std::sync::mpsc` allocates the first
//! time each thread blocks on a channel, which can fall in any step.)

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

pub(crate) struct Handoff<T> {
    state: Mutex<(VecDeque<T>, bool)>,
    ready: Condvar,
}

impl<T> Handoff<T> {
    /// Room for `cap` items: more are never in the queue at once.
    pub fn new(cap: usize) -> Self {
        Handoff { state: Mutex::new((VecDeque::with_capacity(cap), false)), ready: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<T>, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`; gives it back if the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut st = self.lock();
        if st.1 {
            return Err(item);
        }
        st.0.push_back(item);
        self.ready.notify_all();
        Ok(())
    }

    /// The next item, waiting for one; `None` once closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(item) = st.0.pop_front() {
                return Some(item);
            }
            if st.1 {
                return None;
            }
            st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// No more pushes; a waiting `pop` returns what is left, then `None`.
    pub fn close(&self) {
        self.lock().1 = true;
        self.ready.notify_all();
    }
}
