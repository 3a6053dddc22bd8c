//! The bodies of atoll's fuzz targets, and a small mutation run that needs no nightly
//! toolchain.
//!
//! Each target is a plain function of arbitrary bytes ([`targets`]) that panics only on a
//! real bug. Two things call them: the cargo-fuzz binaries in `fuzz/fuzz_targets/` (one
//! line each, coverage-guided, nightly: `cargo fuzz run NAME`), and [`Target::smoke`], which
//! feeds a target its valid [`seeds`], any saved corpus, and a few thousand seeded
//! mutations of them on the stable toolchain: what `cargo test` (and so CI) runs, see
//! `tests/smoke.rs`.

pub mod mutate;
pub mod seeds;
pub mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use mutate::Mutator;

/// One fuzz target: its name (that of its cargo-fuzz binary), its body, and its seeds.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The name, as in `fuzz/Cargo.toml` and `cargo fuzz run NAME`.
    pub name: &'static str,
    /// The body: arbitrary bytes in, a panic only on a bug.
    pub run: fn(&[u8]),
    /// Valid inputs to start mutating from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        /// Every fuzz target.
        pub static TARGETS: &[Target] = &[$(Target {
            name: stringify!($name),
            run: targets::$name,
            seeds: seeds::$name,
        }),*];
    };
}

targets!(
    frame_decoder,
    data_envelope,
    control_envelope,
    swim_datagram,
    gossip_delta,
    gossip_digest,
    chain_entry,
    chain_sync,
    merkle_message,
    data_message,
    registry_delta,
    grain_state,
    chat_room_state,
    incarnation_record,
);

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// An input that made a target panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fuzz target {target} panicked on input {index} ({} bytes): {message}", input.len())]
pub struct Crash {
    /// The target.
    pub target: &'static str,
    /// Which input it was: seeds and corpus first, then the mutations.
    pub index: usize,
    /// The input.
    pub input: Vec<u8>,
    /// The panic's message.
    pub message: String,
}

impl Target {
    /// Runs the target on `input`; a panic comes back as its message.
    pub fn check(&self, input: &[u8]) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| (self.run)(input))).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into())
        })
    }

    /// Feeds the target its seeds, then `corpus`, then `iterations` mutations of them
    /// (seeded by `seed`, so a run replays exactly). Returns how many inputs ran, or the
    /// first one that panicked.
    pub fn smoke(&self, corpus: &[Vec<u8>], iterations: usize, seed: u64) -> Result<usize, Crash> {
        let mut pool = (self.seeds)();
        pool.extend(corpus.iter().cloned());
        if pool.is_empty() {
            pool.push(Vec::new());
        }
        let mut mutator = Mutator::new(seed);
        let fixed = pool.len();
        for index in 0..fixed + iterations {
            let input = if index < fixed {
                pool[index].clone()
            } else {
                mutator.next_input(&pool)
            };
            if let Err(message) = self.check(&input) {
                return Err(Crash {
                    target: self.name,
                    index,
                    input,
                    message,
                });
            }
        }
        Ok(fixed + iterations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_ff(data: &[u8]) {
        assert!(!data.contains(&0xff), "found 0xff");
    }

    fn zeros() -> Vec<Vec<u8>> {
        vec![vec![0; 8]]
    }

    const PICKY: Target = Target {
        name: "picky",
        run: no_ff,
        seeds: zeros,
    };

    #[test]
    fn a_panic_found_by_mutation_is_reported_with_its_input_and_replays() {
        let crash = PICKY.smoke(&[], 5_000, 1).unwrap_err();
        assert!(crash.index >= 1, "{crash}");
        assert!(crash.input.contains(&0xff), "{crash:?}");
        assert!(crash.message.contains("found 0xff"), "{crash:?}");
        assert_eq!(PICKY.smoke(&[], 5_000, 1).unwrap_err(), crash);
    }

    #[test]
    fn a_corpus_input_that_panics_is_reported_before_any_mutation() {
        let crash = PICKY.smoke(&[vec![1, 0xff]], 5_000, 1).unwrap_err();
        assert_eq!((crash.index, crash.input), (1, vec![1, 0xff]));
    }

    #[test]
    fn a_clean_run_counts_seeds_corpus_and_mutations() {
        let quiet = Target {
            name: "quiet",
            run: |_| {},
            seeds: zeros,
        };
        assert_eq!(quiet.smoke(&[vec![1]], 100, 1), Ok(102));
    }

    #[test]
    fn targets_have_distinct_names_and_seeds() {
        let names: std::collections::BTreeSet<&str> = TARGETS.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), TARGETS.len());
        for t in TARGETS {
            assert!(!(t.seeds)().is_empty(), "{} has no seeds", t.name);
            assert!(std::ptr::eq(target(t.name).unwrap(), t));
        }
    }
}
