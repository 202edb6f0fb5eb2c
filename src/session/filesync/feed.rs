//! What the threads of a transfer hand to it: the walker's STAT packets
//! (with the files they offer), and the packets of files read on reader
//! threads. One lock, taken once per batch on each side: the walker hands
//! over batches, the transfer takes everything there is at once, and each
//! side wakes the other only when it is waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;

use super::Offer;

/// STAT packets handed over and not yet taken, in bytes: the walker waits
/// beyond this. About ten thousand entries.
const STATS_MAX: usize = 1 << 20;
/// File content from reader threads not yet taken, in bytes.
const DATA_MAX: usize = 4 << 20;

/// How the walk went.
#[derive(Debug, Clone, Default)]
pub(super) enum WalkState {
    #[default]
    Running,
    Done {
        entries: u64,
        took: Duration,
    },
    Failed(String),
}

/// Everything taken at once.
#[derive(Default)]
pub(super) struct Taken {
    /// Encoded STAT packets, in walk order.
    pub stats: Vec<Bytes>,
    /// The files those packets offer.
    pub offers: Vec<(u32, Offer)>,
    /// Encoded DATA packets from reader threads.
    pub data: Vec<Bytes>,
    /// Content bytes and whole files in `data`.
    pub bytes: u64,
    pub files: u64,
    pub walk: WalkState,
    /// Why a reader thread could not send a file.
    pub failure: Option<String>,
}

impl Taken {
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
            && self.data.is_empty()
            && self.failure.is_none()
            && matches!(self.walk, WalkState::Running)
    }
}

#[derive(Default)]
struct State {
    stats: Vec<Bytes>,
    stats_len: usize,
    offers: Vec<(u32, Offer)>,
    data: Vec<Bytes>,
    data_len: usize,
    bytes: u64,
    files: u64,
    walk: WalkState,
    failure: Option<String>,
    /// The transfer, waiting for anything.
    waker: Option<Waker>,
    /// Producers waiting for room.
    waiting: usize,
    /// The transfer is gone: producers stop.
    closed: bool,
}

/// The receiving end went away.
#[derive(Debug)]
pub(super) struct Closed;

#[derive(Default)]
pub(super) struct Feed {
    state: Mutex<State>,
    room: Condvar,
    /// The transfer is waiting: hand over now rather than fill a batch.
    hungry: AtomicBool,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug already reported by the
        // panic hook; the state itself stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the transfer is waiting for more.
    pub fn hungry(&self) -> bool {
        self.hungry.load(Ordering::Relaxed)
    }

    /// Waits while `full` says there is no room, unless closed.
    fn wait_for_room<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        full: impl Fn(&State) -> bool,
    ) -> Result<MutexGuard<'a, State>, Closed> {
        while full(&state) && !state.closed {
            state.waiting += 1;
            state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
            state.waiting -= 1;
        }
        if state.closed {
            return Err(Closed);
        }
        Ok(state)
    }

    fn wake(&self, mut state: MutexGuard<'_, State>) {
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            self.hungry.store(false, Ordering::Relaxed);
            w.wake();
        }
    }

    /// The walker hands over a batch of STAT packets and their offers.
    pub fn push_stats(&self, stats: Bytes, offers: Vec<(u32, Offer)>) -> Result<(), Closed> {
        let state = self.lock();
        let mut state = self.wait_for_room(state, |s| s.stats_len >= STATS_MAX)?;
        state.stats_len += stats.len();
        state.stats.push(stats);
        state.offers.extend(offers);
        self.wake(state);
        Ok(())
    }

    /// The walk ended (after its last batch).
    pub fn walk_ended(&self, how: WalkState) {
        let mut state = self.lock();
        state.walk = how;
        self.wake(state);
    }

    /// A reader thread hands over packets of a file: `bytes` of content,
    /// and whether they end it.
    pub fn push_data(&self, packets: Bytes, bytes: u64, ends_file: bool) -> Result<(), Closed> {
        let state = self.lock();
        let mut state = self.wait_for_room(state, |s| s.data_len >= DATA_MAX)?;
        state.data_len += packets.len();
        state.data.push(packets);
        state.bytes += bytes;
        state.files += u64::from(ends_file);
        self.wake(state);
        Ok(())
    }

    /// A reader thread could not send a file as announced.
    pub fn fail(&self, message: String) {
        let mut state = self.lock();
        state.failure.get_or_insert(message);
        self.wake(state);
    }

    /// Takes everything handed over; when there is nothing, `waker` is
    /// woken once there is.
    pub fn take(&self, waker: &Waker) -> Taken {
        let mut state = self.lock();
        let taken = Taken {
            stats: std::mem::take(&mut state.stats),
            offers: std::mem::take(&mut state.offers),
            data: std::mem::take(&mut state.data),
            bytes: std::mem::take(&mut state.bytes),
            files: std::mem::take(&mut state.files),
            // A finished walk is reported once.
            walk: match state.walk {
                WalkState::Running => WalkState::Running,
                _ => std::mem::replace(&mut state.walk, WalkState::Running),
            },
            failure: state.failure.take(),
        };
        if taken.is_empty() {
            state.waker = Some(waker.clone());
            self.hungry.store(true, Ordering::Relaxed);
            return taken;
        }
        state.stats_len = 0;
        state.data_len = 0;
        if state.waiting > 0 {
            self.room.notify_all();
        }
        taken
    }

    /// The transfer is over: producers stop at their next hand-over.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.waker = None;
        if state.waiting > 0 {
            self.room.notify_all();
        }
    }
}
