//! Each fuzz target, fed its seeds, its saved corpus (`fuzz/corpus/NAME/`, if any) and a few
//! thousand seeded mutations on the stable toolchain. `ATOLL_FUZZ_ITERATIONS` (default
//! 3000) and `ATOLL_FUZZ_SEED` (default 1) widen or vary the run. An input that panics is
//! saved as `fuzz/artifacts/NAME/crash-SEED-INDEX`, which `cargo fuzz run NAME FILE` replays.

use std::path::{Path, PathBuf};

use atoll_fuzz_targets::{Crash, TARGETS, target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn setting(var: &str, default: u64) -> u64 {
    std::env::var(var).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{var} must be a number, not {v:?}"))
    })
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir().join("corpus").join(name)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn report(crash: &Crash, seed: u64) -> String {
    let dir = fuzz_dir().join("artifacts").join(crash.target);
    let file = dir.join(format!("crash-{seed}-{}", crash.index));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, &crash.input))
        .map_or_else(
            |e| format!("could not save it: {e}"),
            |()| format!("saved as {}", file.display()),
        );
    let shown = &crash.input[..crash.input.len().min(512)];
    format!(
        "{crash}\ninput (hex, first {} bytes): {}\n{saved}; replay with \
         ATOLL_FUZZ_SEED={seed} or `cargo fuzz run {} FILE`",
        shown.len(),
        hex(shown),
        crash.target
    )
}

fn smoke(name: &str) {
    let t = target(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let iterations = setting("ATOLL_FUZZ_ITERATIONS", 3_000) as usize;
    let seed = setting("ATOLL_FUZZ_SEED", 1);
    let corpus = corpus(name);
    match t.smoke(&corpus, iterations, seed) {
        Ok(n) => eprintln!(
            "{name}: {n} inputs ({} corpus files, seed {seed}), no panic",
            corpus.len()
        ),
        Err(crash) => panic!("{}", report(&crash, seed)),
    }
}

macro_rules! smoke_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test]
        fn $name() {
            smoke(stringify!($name));
        })*

        /// The tests above, by name.
        const SMOKED: &[&str] = &[$(stringify!($name)),*];
    };
}

smoke_tests!(
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

/// The `[[bin]]` names of the cargo-fuzz crate.
fn cargo_fuzz_binaries() -> Vec<String> {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().trim_start_matches('=').trim();
            names.push(value.trim_matches('"').to_string());
        }
    }
    names
}

#[test]
fn every_cargo_fuzz_binary_runs_a_shared_target_and_is_smoked_here() {
    let mut binaries = cargo_fuzz_binaries();
    binaries.sort();
    let mut shared: Vec<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
    shared.sort();
    let mut smoked: Vec<String> = SMOKED.iter().map(|s| s.to_string()).collect();
    smoked.sort();
    assert_eq!(binaries, shared, "fuzz/Cargo.toml's [[bin]]s vs TARGETS");
    assert_eq!(smoked, shared, "the smoke tests vs TARGETS");
    for name in &binaries {
        let path = fuzz_dir().join(format!("fuzz_targets/{name}.rs"));
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(
            body.contains(&format!("atoll_fuzz_targets::targets::{name}(")),
            "{} does not call atoll_fuzz_targets::targets::{name}",
            path.display()
        );
    }
}
