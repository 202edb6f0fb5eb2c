//! Checks of image references and platforms, done before anything starts:
//! a tag the registry would refuse or a platform the daemon cannot parse
//! must not cost a whole build. The grammars are those of the Docker
//! distribution reference and of containerd's platform specifiers.

use std::sync::OnceLock;

use regex::Regex;

use crate::text::escape_str;

/// The longest repository name a reference may carry.
const NAME_TOTAL_MAX: usize = 255;

fn reference_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        let alnum = "[a-z0-9]+";
        let separator = "(?:[._]|__|[-]+)";
        let path_component = format!("{alnum}(?:{separator}{alnum})*");
        let domain_component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let ipv6 = r"\[(?:[a-fA-F0-9:]+)\]";
        let host = format!("(?:{domain_component}(?:\\.{domain_component})*|{ipv6})");
        let domain = format!("{host}(?::[0-9]+)?");
        let name = format!("(?:{domain}/)?{path_component}(?:/{path_component})*");
        let tag = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        let full = format!("^({name})(?::({tag}))?(?:@({digest}))?$");
        Regex::new(&full).ok()
    })
    .as_ref()
}

/// Checks an image reference as the registry client will parse it: a
/// lower-case repository path, an optional tag, an optional digest.
pub fn check_reference(flag: &str, reference: &str) -> Result<(), String> {
    let fail = |why: &str| format!("invalid {flag} {:?}: {why}", escape_str(reference).as_str());
    if reference.is_empty() {
        return Err(fail("empty image name"));
    }
    // The patterns are fixed; the unit tests prove they compile.
    let Some(re) = reference_re() else {
        return Ok(());
    };
    let Some(caps) = re.captures(reference) else {
        // Matching again with the path lower-cased tells the two common
        // mistakes apart.
        let lowered = lowercase_path(reference);
        if lowered != reference && re.is_match(&lowered) {
            return Err(fail("repository name must be lowercase"));
        }
        return Err(fail(
            "invalid reference format (expected [REGISTRY/]REPOSITORY[:TAG][@DIGEST])",
        ));
    };
    if caps.get(1).map_or(0, |m| m.len()) > NAME_TOTAL_MAX {
        return Err(fail(
            "repository name must not be longer than 255 characters",
        ));
    }
    if let Some(digest) = caps.get(3) {
        let (algorithm, hex) = digest.as_str().split_once(':').unwrap_or_default();
        let want = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(fail("unsupported digest algorithm")),
        };
        if hex.len() != want || hex.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(fail("invalid digest length or case"));
        }
    }
    Ok(())
}

/// The reference with its repository path (not the registry host, not the
/// tag) lower-cased.
fn lowercase_path(reference: &str) -> String {
    let (before_digest, digest) = match reference.split_once('@') {
        Some((a, d)) => (a, Some(d)),
        None => (reference, None),
    };
    let last_slash = before_digest.rfind('/');
    let tag_colon = before_digest
        .rfind(':')
        .filter(|&c| last_slash.is_none_or(|s| c > s));
    let (name, tag) = match tag_colon {
        Some(c) => (&before_digest[..c], Some(&before_digest[c..])),
        None => (before_digest, None),
    };
    let (host, path) = match name.split_once('/') {
        Some((h, p)) if h.contains(['.', ':']) || h == "localhost" => (Some(h), p),
        _ => (None, name),
    };
    let mut out = String::new();
    if let Some(h) = host {
        out.push_str(h);
        out.push('/');
    }
    out.push_str(&path.to_ascii_lowercase());
    out.push_str(tag.unwrap_or(""));
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    out
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// Architecture spellings containerd accepts for the canonical names.
fn canonical_arch(arch: &str) -> String {
    let arch = arch.to_ascii_lowercase();
    match arch.as_str() {
        "i386" => "386".into(),
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "armhf" | "armel" => "arm".into(),
        _ => arch,
    }
}

/// Checks one platform specifier as containerd parses it: `OS/ARCH[/VARIANT]`,
/// or a lone OS or architecture; `local` means the daemon's own platform.
pub fn check_platform(spec: &str) -> Result<(), String> {
    let fail = |why: &str| format!("invalid --platform {:?}: {why}", escape_str(spec).as_str());
    if spec == "local" {
        return Ok(());
    }
    if spec.contains('*') {
        return Err(fail("wildcards are not supported"));
    }
    static OS_RE: OnceLock<Option<Regex>> = OnceLock::new();
    static PART_RE: OnceLock<Option<Regex>> = OnceLock::new();
    let os_re = OS_RE.get_or_init(|| {
        Regex::new(r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$").ok()
    });
    let part_re = PART_RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9_.-]+$").ok());
    let (Some(os_re), Some(part_re)) = (os_re, part_re) else {
        return Ok(());
    };
    let parts: Vec<&str> = spec.split('/').collect();
    if parts.len() > 3 {
        return Err(fail("expected OS/ARCH[/VARIANT], e.g. linux/amd64"));
    }
    let Some(os) = os_re.captures(parts[0]).and_then(|c| c.get(1)) else {
        return Err(fail("expected OS/ARCH[/VARIANT], e.g. linux/amd64"));
    };
    if let Some(bad) = parts[1..].iter().find(|p| !part_re.is_match(p)) {
        return Err(fail(&format!(
            "{:?} is not a valid platform component",
            escape_str(bad).as_str()
        )));
    }
    if parts.len() == 1 {
        let os = os.as_str().to_ascii_lowercase();
        let known =
            KNOWN_OS.contains(&os.as_str()) || KNOWN_ARCH.contains(&canonical_arch(&os).as_str());
        if !known {
            return Err(fail("unknown operating system or architecture"));
        }
    }
    Ok(())
}

/// Checks a comma-separated `--platform` value.
pub fn check_platforms(value: &str) -> Result<(), String> {
    for p in value.split(',') {
        let p = p.trim();
        if p.is_empty() {
            return Err(format!(
                "invalid --platform {:?}: empty platform",
                escape_str(value).as_str()
            ));
        }
        check_platform(p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Valid and invalid references from the distribution reference
    // grammar's own test table (reference_test.go), as far as it applies
    // to names without normalisation.
    #[test]
    fn references_like_the_distribution_grammar() {
        let valid = [
            "test_com",
            "test.com:tag",
            "test.com:5000",
            "test.com/repo:tag",
            "test:5000/repo",
            "test:5000/repo:tag",
            "test:5000/repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "test:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "lowercase:Uppercase",
            "sub-dom1.foo.com/bar/baz/quux",
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "xn--n3h.com/myimage:xn--n3h.com",
            "foo_bar.com:8080",
            "foo/foo_bar.com:8080",
            "192.168.1.1",
            "192.168.1.1:tag",
            "192.168.1.1:5000",
            "192.168.1.1/repo",
            "[2001:db8::1]/repo",
            "[2001:db8::1]:5000/repo:tag",
            "localhost:5000/app:1",
            "a/a/a/a/a/a/b/b/b/b/b",
        ];
        for r in valid {
            assert!(check_reference("--tag", r).is_ok(), "{r} should be valid");
        }
        let invalid = [
            ("", "empty image name"),
            (":justtag", "invalid reference format"),
            ("@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "invalid reference format"),
            ("repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "digest length"),
            ("validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "unsupported digest"),
            ("Uppercase:tag", "must be lowercase"),
            ("App:UPPER", "must be lowercase"),
            ("test:5000/Uppercase/lowercase:tag", "must be lowercase"),
            ("aa/asdf$$^/aa", "invalid reference format"),
            ("a:b:c", "invalid reference format"),
            ("app:tag with space", "invalid reference format"),
        ];
        for (r, why) in invalid {
            let e = check_reference("--tag", r).expect_err(r);
            assert!(e.contains(why), "{r}: {e}");
        }
        // Too long a tag, too long a name.
        assert!(check_reference("--tag", &format!("a:{}", "t".repeat(129))).is_err());
        assert!(check_reference("--tag", "a/".repeat(129).trim_end_matches('/')).is_err());
        // Upper case in the registry host is fine.
        assert!(check_reference("--tag", "Registry.Example.com/app:1").is_ok());
    }

    // Specifiers from containerd's platforms_test.go.
    #[test]
    fn platforms_like_containerd() {
        for p in [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v7",
            "linux",
            "amd64",
            "aarch64",
            "x86_64",
            "armhf",
            "windows(10.0.17763)/amd64",
            "linux/ppc64le",
            "local",
            "Linux/AMD64",
        ] {
            assert!(check_platform(p).is_ok(), "{p} should be valid");
        }
        for p in [
            "linux/amd64/v8/extra",
            "unknown",
            "linux/*",
            "linux/arm 64",
            "/amd64",
            "linux//v7",
        ] {
            assert!(check_platform(p).is_err(), "{p} should be invalid");
        }
        assert!(check_platforms("linux/amd64,linux/arm64").is_ok());
        assert!(check_platforms("linux/amd64,").is_err());
    }
}
