//! The async runtime the Raft core runs on: tokio, with the one random choice openraft
//! makes (each election timeout) drawn from a per-thread generator that a simulation can
//! seed ([`seed_thread_rng`]), so a seeded run elects the same leaders at the same times.

use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::marker::PhantomData;
use std::time::Duration;

use atoll_core::SplitMix64;
use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend, TokioInstant};

thread_local! {
    /// The generator's state on this thread; `None` until first used or seeded.
    static STATE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Seeds this thread's Raft randomness (election timeouts): every Raft core on this thread
/// draws from it from now on, in the order they ask. A simulation on a current-thread
/// runtime calls this once per run with a number from its seed.
pub fn seed_thread_rng(seed: u64) {
    STATE.with(|s| s.set(Some(seed)));
}

/// This thread's Raft randomness: seeded by [`seed_thread_rng`], otherwise from the
/// process's random hasher keys the first time it is used.
#[derive(Debug, Default)]
pub struct ThreadRng(PhantomData<*const ()>);

impl rand_core::RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        STATE.with(|s| {
            let state = s
                .get()
                .unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
            let mut rng = SplitMix64::new(state);
            let out = rng.next_u64();
            s.set(Some(state.wrapping_add(0x9e37_79b9_7f4a_7c15)));
            out
        })
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// Tokio, with [`ThreadRng`] for openraft's random choices.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RaftRuntime;

impl AsyncRuntime for RaftRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ThreadRng::default()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::RngCore;

    #[test]
    fn a_seeded_thread_draws_the_same_numbers() {
        seed_thread_rng(42);
        let a: Vec<u64> = (0..4).map(|_| ThreadRng::default().next_u64()).collect();
        seed_thread_rng(42);
        let b: Vec<u64> = (0..4).map(|_| ThreadRng::default().next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        seed_thread_rng(43);
        assert_ne!(ThreadRng::default().next_u64(), a[0]);
    }
}
