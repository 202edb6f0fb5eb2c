//! Bounded fuzzing with proptest: the fsutil packet decoding and encoding,
//! bkd's file-sync receiver fed arbitrary packets, and the .dockerignore
//! pattern matcher. Seeds come from tests/fuzz-corpus/; shrunk failures are
//! written to tests/fuzz.regressions and replayed first on every run. Each
//! target runs a fixed number of cases (about a second in all);
//! PROPTEST_CASES raises it for a longer run.

use std::path::Path;

use bkd::fsync::patterns::{clean_path, MatchInfo, PatternMatcher};
use bkd::fsync::receive::Receiver;
use bkd::proto::fsutil::types::{Packet, Stat};
use proptest::prelude::*;
use prost::Message;

fn corpus(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with("# "))
        .map(str::to_string)
        .collect()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    }
}

/// Path-like strings: corpus entries, their pieces recombined, and noise.
fn path_like() -> impl Strategy<Value = String> {
    let seeds = corpus("paths.txt");
    let pats = corpus("patterns.txt");
    prop_oneof![
        proptest::sample::select(seeds),
        proptest::sample::select(pats),
        "[a-c./*?!\\[\\]\\\\^-]{0,12}",
        proptest::collection::vec("[a-z.]{1,3}|\\.\\.|\\*\\*|\\*", 1..5).prop_map(|v| v.join("/")),
        any::<String>(),
    ]
}

fn stat_strategy() -> impl Strategy<Value = Stat> {
    let modes = prop_oneof![
        Just(0o644u32),
        Just(0o755 | 1 << 31),
        Just(0o777 | 1 << 27),
        Just(0o644 | 1 << 25),
        any::<u32>(),
    ];
    (path_like(), modes, any::<i64>(), path_like(), any::<i64>()).prop_map(
        |(path, mode, size, linkname, mod_time)| Stat {
            path: path.into(),
            mode,
            size,
            linkname: linkname.into(),
            mod_time,
            ..Default::default()
        },
    )
}

fn packet_strategy() -> impl Strategy<Value = Packet> {
    (
        prop_oneof![0..5i32, any::<i32>()],
        proptest::option::of(stat_strategy()),
        prop_oneof![0..8u32, any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(r#type, stat, id, data)| Packet {
            r#type,
            stat,
            id,
            data: data.into(),
        })
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn packets_survive_encoding_and_arbitrary_bytes_never_panic(
        p in packet_strategy(),
        noise in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let bytes = p.encode_to_vec();
        prop_assert_eq!(Packet::decode(bytes.as_slice()).ok(), Some(p));
        // Garbage is an error or some packet, never a panic.
        let _ = Packet::decode(noise.as_slice());
    }

    #[test]
    fn patterns_compile_or_fail_cleanly_and_matching_never_panics(
        patterns in proptest::collection::vec(path_like(), 0..6),
        paths in proptest::collection::vec(path_like(), 1..6),
    ) {
        if let Ok(m) = PatternMatcher::new(&patterns) {
            for p in &paths {
                let whole = m.matches_or_parent_matches(p.as_bytes());
                // A pattern that does not compile fails where it is
                // evaluated; the comparison below needs answers.
                if whole.is_err() {
                    continue;
                }
                // Matching component by component, as the walk does, gives
                // the same answer as matching the whole path, as long as no
                // pattern is an exception: with `!` patterns the two differ
                // in the reference matcher too (a skipped exception records
                // no parent match), and the walk follows the reference.
                let cleaned = clean_path(p);
                let has_exception = patterns.iter().any(|x| x.trim_start().starts_with('!'));
                if !has_exception && cleaned != "." && !cleaned.starts_with('/') && !cleaned.starts_with("..") {
                    let mut info = MatchInfo::default();
                    let mut walked = Ok(false);
                    let mut prefix = String::new();
                    for part in cleaned.split('/') {
                        if !prefix.is_empty() {
                            prefix.push('/');
                        }
                        prefix.push_str(part);
                        walked = m
                            .matches_using_parent(prefix.as_bytes(), &info)
                            .map(|(h, i)| {
                                info = i;
                                h
                            });
                        if walked.is_err() {
                            break;
                        }
                    }
                    // A pattern that does not compile may be evaluated on
                    // a parent and not on the whole path: no answer then.
                    let whole_cleaned = m.matches_or_parent_matches(cleaned.as_bytes());
                    if let (Ok(hit), Ok(whole_hit)) = (walked, whole_cleaned) {
                        prop_assert_eq!(
                            hit, whole_hit,
                            "patterns {:?} path {:?}", patterns, cleaned
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn clean_path_is_idempotent(p in path_like()) {
        let once = clean_path(&p);
        prop_assert_eq!(clean_path(&once), once.clone());
        prop_assert!(!once.is_empty());
    }
}

proptest! {
    #![proptest_config(config(1_000))]

    /// Whatever a sender sends, the receiver answers or refuses; it never
    /// panics and never creates anything outside its destination.
    #[test]
    fn the_receiver_never_writes_outside_its_destination(
        packets in proptest::collection::vec(packet_strategy(), 0..24),
    ) {
        let base = tempfile::tempdir().expect("temp dir");
        let dest = base.path().join("dest");
        std::fs::create_dir(&dest).expect("mkdir");
        let dir = bkd::fsync::dirfd::Dir::open(&dest).expect("open dest");
        let mut receiver = Receiver::new(dir, dest.clone());
        for p in packets {
            if receiver.handle(p).is_err() {
                break;
            }
        }
        let outside: Vec<_> = std::fs::read_dir(base.path())
            .expect("read base")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n != "dest")
            .collect();
        prop_assert!(outside.is_empty(), "created outside: {:?}", outside);
    }
}
