//! Rendezvous (highest random weight) hashing: every endpoint gets a score
//! from the key and its own identity, and the key's order is the endpoints
//! by score. Removing an endpoint moves only the keys it came first for
//! (each to its next), and adding one takes over about 1/(N+1) of the keys.

use super::endpoint::Endpoint;

fn score(key: &str, id: &str) -> u64 {
    let mut input = Vec::with_capacity(key.len() + id.len() + 1);
    input.extend_from_slice(key.as_bytes());
    input.push(0);
    input.extend_from_slice(id.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The endpoints in the key's order; duplicates (the same identity from two
/// specs) are kept once.
pub fn order(key: &str, endpoints: &[Endpoint]) -> Vec<Endpoint> {
    let mut scored: Vec<(u64, &Endpoint)> = Vec::new();
    for e in endpoints {
        if !scored.iter().any(|(_, seen)| seen.id == e.id) {
            scored.push((score(key, &e.id), e));
        }
    }
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored.into_iter().map(|(_, e)| e.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Address;

    fn endpoints(n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                id: format!("tcp://buildkitd-{i}.buildkitd:1234"),
                address: Address::Tcp {
                    host: format!("buildkitd-{i}.buildkitd"),
                    port: 1234,
                },
                server_name: None,
                origin: None,
            })
            .collect()
    }

    fn first(key: &str, e: &[Endpoint]) -> String {
        order(key, e)[0].id.clone()
    }

    #[test]
    fn the_order_depends_on_the_key_and_the_members_only() {
        let e = endpoints(3);
        let mut reversed = e.clone();
        reversed.reverse();
        for k in 0..50 {
            let key = format!("github.com/org/repo{k}:Dockerfile::");
            assert_eq!(order(&key, &e), order(&key, &reversed));
        }
        let mut doubled = e.clone();
        doubled.extend(e.clone());
        assert_eq!(order("k", &doubled).len(), 3);
    }

    #[test]
    fn scaling_from_n_to_n_plus_one_moves_about_one_key_in_n_plus_one() {
        const KEYS: usize = 10_000;
        for n in [2usize, 3, 5, 8] {
            let before = endpoints(n);
            let after = endpoints(n + 1);
            let added = &after[n].id;
            let mut moved = 0;
            for k in 0..KEYS {
                let key = format!("repo-{k}:Dockerfile::");
                let (a, b) = (first(&key, &before), first(&key, &after));
                if a != b {
                    // A key only ever moves to the new member.
                    assert_eq!(&b, added, "{key} moved between old members");
                    moved += 1;
                }
            }
            let expected = KEYS as f64 / (n + 1) as f64;
            let share = moved as f64 / expected;
            assert!(
                (0.9..1.1).contains(&share),
                "{n} -> {}: {moved} of {KEYS} keys moved, expected about {expected:.0}",
                n + 1
            );
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_keys_to_their_next_choice() {
        let all = endpoints(4);
        let gone = all[2].id.clone();
        let rest: Vec<Endpoint> = all.iter().filter(|e| e.id != gone).cloned().collect();
        let mut per_member = std::collections::HashMap::new();
        for k in 0..4000 {
            let key = format!("k{k}");
            let full = order(&key, &all);
            let without = order(&key, &rest);
            let expect: Vec<&str> = full
                .iter()
                .filter(|e| e.id != gone)
                .map(|e| e.id.as_str())
                .collect();
            let got: Vec<&str> = without.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(got, expect);
            *per_member.entry(full[0].id.clone()).or_insert(0) += 1;
        }
        // The keys spread evenly: each of 4 members is first for about 1000.
        for (member, count) in per_member {
            assert!((850..1150).contains(&count), "{member}: {count}");
        }
    }
}
