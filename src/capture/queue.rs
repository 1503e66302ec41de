//! The hand-off between the capture thread and the inference thread.
//!
//! For cameras the newest frame wins: a frame that inference has not taken
//! when the next one arrives is dropped (and counted), so a slow consumer
//! never backs up into the camera driver. For files every frame counts: the
//! queue is bounded and capture waits.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::frame::Frame;

pub struct FrameQueue {
    lossless: bool,
    capacity: usize,
    inner: Mutex<Inner>,
    changed: Condvar,
}

struct Inner {
    frames: VecDeque<Frame>,
    closed: bool,
}

/// What `pop` saw.
#[derive(Debug)]
pub enum Popped {
    Frame(Frame),
    Timeout,
    Closed,
}

impl FrameQueue {
    /// Newest-wins queue holding one frame.
    pub fn latest() -> FrameQueue {
        Self::new(false, 1)
    }

    /// Bounded queue where every frame is kept.
    pub fn lossless(capacity: usize) -> FrameQueue {
        Self::new(true, capacity.max(1))
    }

    fn new(lossless: bool, capacity: usize) -> FrameQueue {
        FrameQueue { lossless, capacity, inner: Mutex::new(Inner { frames: VecDeque::new(), closed: false }), changed: Condvar::new() }
    }

    /// Adds a frame; returns true when an older frame was dropped for it.
    pub fn push(&self, frame: Frame) -> bool {
        let mut g = self.inner.lock().expect("queue lock");
        let mut dropped = false;
        if self.lossless {
            while g.frames.len() >= self.capacity && !g.closed {
                g = self.changed.wait(g).expect("queue lock");
            }
        } else {
            while g.frames.len() >= self.capacity {
                g.frames.pop_front();
                dropped = true;
            }
        }
        if !g.closed {
            g.frames.push_back(frame);
        }
        self.changed.notify_all();
        dropped
    }

    /// Waits up to `timeout` for a frame.
    pub fn pop(&self, timeout: Duration) -> Popped {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock().expect("queue lock");
        loop {
            if let Some(f) = g.frames.pop_front() {
                self.changed.notify_all();
                return Popped::Frame(f);
            }
            if g.closed {
                return Popped::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Popped::Timeout;
            }
            g = self.changed.wait_timeout(g, deadline - now).expect("queue lock").0;
        }
    }

    /// Drops what is queued (a trigger wants a frame taken after it).
    pub fn clear(&self) -> usize {
        let mut g = self.inner.lock().expect("queue lock");
        let n = g.frames.len();
        g.frames.clear();
        self.changed.notify_all();
        n
    }

    /// No more frames will come; waiting consumers and producers wake up.
    /// Frames already queued can still be popped.
    pub fn close(&self) {
        self.inner.lock().expect("queue lock").closed = true;
        self.changed.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().expect("queue lock").closed
    }

    pub fn is_lossless(&self) -> bool {
        self.lossless
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    fn frame(seq: u64) -> Frame {
        Frame::new(1, 1, PixelFormat::Grey8, vec![0], seq, "t".into()).unwrap()
    }

    #[test]
    fn newest_wins_and_drops_are_reported() {
        let q = FrameQueue::latest();
        assert!(!q.push(frame(1)));
        assert!(q.push(frame(2)));
        assert!(matches!(q.pop(Duration::ZERO), Popped::Frame(f) if f.seq == 2));
        assert!(matches!(q.pop(Duration::from_millis(5)), Popped::Timeout));
        q.close();
        assert!(matches!(q.pop(Duration::from_secs(5)), Popped::Closed));
    }

    #[test]
    fn lossless_keeps_every_frame_and_waits_for_room() {
        let q = std::sync::Arc::new(FrameQueue::lossless(2));
        let q2 = q.clone();
        let producer = std::thread::spawn(move || {
            for s in 0..5 {
                assert!(!q2.push(frame(s)));
            }
        });
        let mut got = vec![];
        while got.len() < 5 {
            if let Popped::Frame(f) = q.pop(Duration::from_secs(5)) {
                got.push(f.seq);
            }
        }
        producer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }
}
