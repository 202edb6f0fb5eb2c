//! The context bkd sends is the context buildctl sends: bkd's `.dockerignore`
//! matcher against the reference matcher, and whole builds of many small
//! contexts by bkd and by buildctl on the same daemon, compared entry by
//! entry. The harness and how to add a case: tests/differential/.
//!
//! Knobs: `BKD_DIFFERENTIAL_ONLY=text` builds only the cases whose name
//! contains it; `BKD_DIFFERENTIAL_AWAITING=1` adds the cases that wait for
//! a fix; `BKD_DIFFERENTIAL_BKD=/path/to/bkd` compares another bkd binary;
//! `BKD_DIFFERENTIAL_WORKERS=n` builds n jobs at a time,
//! `BKD_DIFFERENTIAL_PASSES=n` builds the shared-build cases n times.

mod common;
mod differential;

use differential::oracle::Oracle;
use differential::reference;

/// Generated pattern lists per run; `BKD_ORACLE_LISTS` changes it,
/// `BKD_ORACLE_SEED` picks another sequence.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn the_matcher_answers_as_the_reference_matcher() {
    let mut oracle = Oracle::start();
    let mut problems = reference::check_tables(&mut oracle);
    problems.extend(reference::check_unicode_classes(&mut oracle));
    let seed = env_number("BKD_ORACLE_SEED", 18);
    let lists = env_number("BKD_ORACLE_LISTS", 10_000) as usize;
    problems.extend(reference::check_generated(&mut oracle, seed, lists));
    assert!(
        problems.is_empty(),
        "{} disagreements with the reference matcher:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Jobs built at a time; `BKD_DIFFERENTIAL_WORKERS` changes it.
const WORKERS: u64 = 2;
/// Times each shared-build case is built; `BKD_DIFFERENTIAL_PASSES`.
const PASSES: u64 = 2;

#[test]
fn builds_send_what_buildctl_sends() {
    let cases = differential::cases::all();
    let only = std::env::var("BKD_DIFFERENTIAL_ONLY").unwrap_or_default();
    let cases: Vec<_> = cases
        .into_iter()
        .filter(|c| c.name.contains(only.as_str()))
        .collect();
    let workers = env_number("BKD_DIFFERENTIAL_WORKERS", WORKERS) as usize;
    let started = std::time::Instant::now();
    let harness = differential::run::Harness::new();
    let passes = env_number("BKD_DIFFERENTIAL_PASSES", PASSES) as usize;
    let problems = harness.run(&cases, workers, passes);
    eprintln!(
        "{} cases built by bkd and buildctl in {:.1}s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} of {} cases differ:\n\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n\n")
    );
}
