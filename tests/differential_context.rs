//! The context bkd sends is the context buildctl sends: bkd's `.dockerignore`
//! matcher against the reference matcher, and whole builds of many small
//! contexts by bkd and by buildctl on the same daemon, compared entry by
//! entry. The harness and how to add a case: tests/differential/.

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
