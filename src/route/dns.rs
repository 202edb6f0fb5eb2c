//! Discovery of a pool's members in DNS, as a Kubernetes headless Service
//! publishes them: every A and AAAA record of a name (the system resolver,
//! so `/etc/hosts`, search domains and `ndots` apply as for any name), or
//! every SRV record of a name (the C library's `res_search`, which reads
//! the same `/etc/resolv.conf` and retries over TCP when an answer is too
//! long for UDP). No Kubernetes API is involved.

use std::net::IpAddr;

/// One SRV target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Without the trailing dot.
    pub host: String,
}

/// Every address `name` resolves to (A and AAAA), in the resolver's order,
/// each once.
pub async fn addresses(name: &str, port: u16) -> Result<Vec<IpAddr>, String> {
    let found = tokio::net::lookup_host((name, port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", crate::text::escape_str(name)))?;
    let mut ips = Vec::new();
    for sa in found {
        if !ips.contains(&sa.ip()) {
            ips.push(sa.ip());
        }
    }
    if ips.is_empty() {
        return Err(format!(
            "{} has no A or AAAA records",
            crate::text::escape_str(name)
        ));
    }
    Ok(ips)
}

const CLASS_IN: i32 = 1;
const TYPE_SRV: u16 = 33;

extern "C" {
    // glibc: searches the resolver's domains like any lookup, returns the
    // answer's length or -1 with h_errno set.
    fn res_search(
        dname: *const libc::c_char,
        class: libc::c_int,
        kind: libc::c_int,
        answer: *mut u8,
        anslen: libc::c_int,
    ) -> libc::c_int;
    fn __h_errno_location() -> *mut libc::c_int;
}

/// The SRV records of `name`.
pub async fn srv(name: &str) -> Result<Vec<SrvTarget>, String> {
    let owned = name.to_string();
    let answer = tokio::task::spawn_blocking(move || query_srv(&owned))
        .await
        .map_err(|e| format!("the SRV lookup task failed: {e}"))??;
    let targets = parse_srv_answer(&answer)
        .map_err(|e| format!("bad DNS answer for {}: {e}", crate::text::escape_str(name)))?;
    if targets.is_empty() {
        return Err(format!(
            "{} has no SRV records",
            crate::text::escape_str(name)
        ));
    }
    Ok(targets)
}

fn query_srv(name: &str) -> Result<Vec<u8>, String> {
    let shown = crate::text::escape_str(name);
    let c_name = std::ffi::CString::new(name).map_err(|_| format!("{shown} holds a NUL byte"))?;
    let mut buf = vec![0u8; 65_535];
    // SAFETY: the name is NUL-terminated and the buffer is as long as said;
    // res_search uses the calling thread's resolver state.
    let n = unsafe {
        res_search(
            c_name.as_ptr(),
            CLASS_IN,
            TYPE_SRV as libc::c_int,
            buf.as_mut_ptr(),
            buf.len() as libc::c_int,
        )
    };
    if n < 0 {
        // SAFETY: glibc's per-thread h_errno.
        let code = unsafe { *__h_errno_location() };
        let reason = match code {
            1 => "no such name",
            2 => "no answer from the name server (try again)",
            3 => "the name server failed",
            4 => "no SRV records",
            _ => "lookup failed",
        };
        return Err(format!("cannot resolve SRV {shown}: {reason}"));
    }
    buf.truncate((n as usize).min(buf.len()));
    Ok(buf)
}

/// The SRV records in the answer section of a DNS response.
pub fn parse_srv_answer(msg: &[u8]) -> Result<Vec<SrvTarget>, String> {
    let u16_at = |at: usize| -> Result<u16, String> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated message".to_string())
    };
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut targets = Vec::new();
    for _ in 0..answers {
        at = read_name(msg, at)?.1;
        let kind = u16_at(at)?;
        let len = u16_at(at + 8)? as usize;
        let data = at + 10;
        if data + len > msg.len() {
            return Err("truncated record".into());
        }
        if kind == TYPE_SRV {
            if len < 7 {
                return Err("short SRV record".into());
            }
            let (host, _) = read_name(msg, data + 6)?;
            targets.push(SrvTarget {
                priority: u16_at(data)?,
                weight: u16_at(data + 2)?,
                port: u16_at(data + 4)?,
                host,
            });
        }
        at = data + len;
    }
    Ok(targets)
}

/// Reads a (possibly compressed) name at `at`: the name, without the
/// trailing dot, and where the record continues.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or("truncated name")? as usize;
        match len {
            0 => {
                end.get_or_insert(at + 1);
                break;
            }
            l if l & 0xC0 == 0xC0 => {
                let low = *msg.get(at + 1).ok_or("truncated name")? as usize;
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > 64 {
                    return Err("name compression loop".into());
                }
                at = ((l & 0x3F) << 8) | low;
            }
            l if l <= 63 => {
                let label = msg.get(at + 1..at + 1 + l).ok_or("truncated label")?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + l;
            }
            _ => return Err("bad label length".into()),
        }
    }
    Ok((labels.join("."), end.unwrap_or(at + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for l in n.split('.').filter(|l| !l.is_empty()) {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out.push(0);
        out
    }

    /// A response as a name server writes it: the question, then SRV
    /// answers whose owner names point back at the question.
    fn response(qname: &str, records: &[(u16, u16, u16, &str)], compress_target: bool) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
        m.extend_from_slice(&(records.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend(name(qname));
        m.extend_from_slice(&[0, 33, 0, 1]);
        for (prio, weight, port, target) in records {
            m.extend_from_slice(&[0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 30]);
            let mut rdata = Vec::new();
            rdata.extend_from_slice(&prio.to_be_bytes());
            rdata.extend_from_slice(&weight.to_be_bytes());
            rdata.extend_from_slice(&port.to_be_bytes());
            if compress_target {
                // "d0" + pointer to the question's second label onwards.
                let first = target.split('.').next().unwrap_or("");
                rdata.push(first.len() as u8);
                rdata.extend_from_slice(first.as_bytes());
                let skip = 12 + 1 + qname.split('.').next().unwrap_or("").len();
                rdata.extend_from_slice(&[0xC0, skip as u8]);
            } else {
                rdata.extend(name(target));
            }
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend(rdata);
        }
        m
    }

    #[test]
    fn reads_srv_answers_plain_and_compressed() {
        let msg = response(
            "_bk._tcp.pool.test",
            &[
                (0, 50, 1234, "d0.pool.test"),
                (10, 50, 1235, "d1.pool.test"),
            ],
            false,
        );
        let t = parse_srv_answer(&msg).expect("parse");
        assert_eq!(
            t,
            vec![
                SrvTarget {
                    priority: 0,
                    weight: 50,
                    port: 1234,
                    host: "d0.pool.test".into()
                },
                SrvTarget {
                    priority: 10,
                    weight: 50,
                    port: 1235,
                    host: "d1.pool.test".into()
                }
            ]
        );
        let msg = response("d.pool.test", &[(0, 0, 9, "x.pool.test")], true);
        assert_eq!(
            parse_srv_answer(&msg).expect("parse")[0].host,
            "x.pool.test"
        );
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let msg = response(
            "_bk._tcp.pool.test",
            &[(0, 50, 1234, "d0.pool.test")],
            false,
        );
        for cut in 0..msg.len() {
            let _ = parse_srv_answer(&msg[..cut]);
        }
        let mut looped = msg.clone();
        // The first answer's owner name points at itself.
        let owner = 12 + name("_bk._tcp.pool.test").len() + 4;
        looped[owner + 1] = owner as u8;
        assert!(parse_srv_answer(&looped).is_err());
    }

    #[tokio::test]
    async fn localhost_has_an_address() {
        let ips = addresses("localhost", 1).await.expect("localhost");
        assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
    }
}
