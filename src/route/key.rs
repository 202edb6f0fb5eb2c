//! The route key: what makes two builds "the same work", so they go to the
//! same daemon and find its cache warm. By default the repository's
//! identity (from the CI system, else the git remote, else the context's
//! absolute path), the Dockerfile's path inside the checkout, the target
//! and the platform. Credentials in a remote URL never enter it.

use std::path::{Path, PathBuf};

/// A route key and where its repository part came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteKey {
    pub key: String,
    /// `--route-key`, `BUILDKITE_REPO`, `git remote origin`, ...
    pub source: String,
}

/// What a build contributes to its default key.
#[derive(Debug, Clone)]
pub struct BuildIdentity<'a> {
    /// The context directory, absolute.
    pub context: &'a Path,
    /// The Dockerfile, absolute.
    pub dockerfile: &'a Path,
    pub target: Option<&'a str>,
    pub platform: Option<&'a str>,
}

/// The CI variables that name the repository being built, in order, with
/// the variable naming its host where the first has none, and the one
/// naming the checkout directory.
const CI_REPOSITORY: &[(&str, Option<&str>, &str)] = &[
    ("BUILDKITE_REPO", None, "BUILDKITE_BUILD_CHECKOUT_PATH"),
    (
        "GITHUB_REPOSITORY",
        Some("GITHUB_SERVER_URL"),
        "GITHUB_WORKSPACE",
    ),
    ("CI_PROJECT_PATH", Some("CI_SERVER_HOST"), "CI_PROJECT_DIR"),
];

impl RouteKey {
    /// `--route-key` as given.
    pub fn given(key: &str) -> RouteKey {
        RouteKey {
            key: key.to_string(),
            source: "--route-key".into(),
        }
    }

    /// The default key of a build, reading the environment through `env`.
    pub fn for_build(build: &BuildIdentity<'_>, env: &dyn Fn(&str) -> Option<String>) -> RouteKey {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut found = None;
        for (name, host_var, checkout_var) in CI_REPOSITORY {
            if let Some(value) = var(name) {
                let repo = match host_var.and_then(var) {
                    Some(host) => format!("{}/{}", host_of(&host), value.trim_matches('/')),
                    None => normalize_remote(&value),
                };
                let checkout = var(checkout_var).map(PathBuf::from);
                found = Some((repo, name.to_string(), checkout));
                break;
            }
        }
        let (repo, source, root) = match found {
            Some((repo, source, checkout)) => {
                let root = checkout
                    .filter(|c| build.context.starts_with(c))
                    .or_else(|| git_top(build.context).map(|(top, _)| top));
                (repo, source, root)
            }
            None => match git_top(build.context) {
                Some((top, git_dir)) => match remote_url(&git_dir) {
                    Some((name, url)) => (
                        normalize_remote(&url),
                        format!("git remote {name}"),
                        Some(top),
                    ),
                    None => (
                        top.display().to_string(),
                        "git checkout without a remote".into(),
                        Some(top),
                    ),
                },
                None => (
                    build.context.display().to_string(),
                    "the context's path".into(),
                    Some(build.context.to_path_buf()),
                ),
            },
        };
        let dockerfile = root
            .as_deref()
            .and_then(|r| build.dockerfile.strip_prefix(r).ok())
            .unwrap_or(build.dockerfile);
        RouteKey {
            key: format!(
                "{repo}:{}:{}:{}",
                dockerfile.display(),
                build.target.unwrap_or(""),
                build.platform.unwrap_or("")
            ),
            source,
        }
    }

    /// The default key of a build whose context the daemon fetches: the
    /// URL names the repository (and the ref in its fragment).
    pub fn for_remote(
        url: &str,
        dockerfile: &str,
        target: Option<&str>,
        platform: Option<&str>,
    ) -> RouteKey {
        let (place, fragment) = match url.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (url, None),
        };
        // A query may carry a token: it names no other repository.
        let place = place.split_once('?').map_or(place, |(p, _)| p);
        let mut repo = normalize_remote(place);
        if let Some(f) = fragment {
            repo = format!("{repo}#{f}");
        }
        RouteKey {
            key: format!(
                "{repo}:{dockerfile}:{}:{}",
                target.unwrap_or(""),
                platform.unwrap_or("")
            ),
            source: "the context's URL".into(),
        }
    }

    /// The session's shared key: the daemon keeps one synced copy of each
    /// local directory per shared key, so builds with the same route key
    /// (whatever machine or directory they run in) send only what changed
    /// since the last one. A digest, so nothing of the key leaves as text.
    pub fn shared_key(&self) -> String {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("bkd shared key\0{}", self.key).as_bytes(),
        );
        hex(&digest.as_ref()[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host of `https://github.com` or of a bare `gitlab.example.com`.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    host.to_ascii_lowercase()
}

/// A remote URL as `host/path`: the same repository cloned over ssh or
/// https, with or without `.git`, gives the same text, and user names,
/// passwords and tokens are dropped.
pub fn normalize_remote(url: &str) -> String {
    let url = url.trim();
    let clean = |path: &str| {
        let path = path.trim_end_matches('/');
        path.strip_suffix(".git").unwrap_or(path).to_string()
    };
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.eq_ignore_ascii_case("file") {
            return clean(rest);
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit('@').next().unwrap_or(authority);
        return format!(
            "{}/{}",
            host.to_ascii_lowercase(),
            clean(path.trim_start_matches('/'))
        );
    }
    // scp-like syntax: [user@]host:path, where no slash comes before the colon.
    if let Some((left, path)) = url.split_once(':') {
        if !left.contains('/') && !left.is_empty() {
            let host = left.rsplit('@').next().unwrap_or(left);
            return format!(
                "{}/{}",
                host.to_ascii_lowercase(),
                clean(path.trim_start_matches('/'))
            );
        }
    }
    clean(url)
}

/// The top of the git checkout holding `dir`, and its git directory (for a
/// worktree or submodule, the directory its `.git` file points at).
fn git_top(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    for top in dir.ancestors() {
        let dot_git = top.join(".git");
        let Ok(meta) = std::fs::metadata(&dot_git) else {
            continue;
        };
        if meta.is_dir() {
            return Some((top.to_path_buf(), dot_git));
        }
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let target = text.trim().strip_prefix("gitdir:")?.trim();
        return Some((top.to_path_buf(), top.join(target)));
    }
    None
}

/// The URL of remote `origin`, else of the first remote with one.
fn remote_url(git_dir: &Path) -> Option<(String, String)> {
    // A worktree's config lives in the common directory.
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.to_path_buf());
    let text = std::fs::read_to_string(common.join("config")).ok()?;
    let remotes = config_remotes(&text);
    remotes
        .iter()
        .find(|(name, _)| name == "origin")
        .or_else(|| remotes.first())
        .cloned()
}

/// `(name, url)` of each `[remote "NAME"]` section with a `url`.
fn config_remotes(config: &str) -> Vec<(String, String)> {
    let mut remotes = Vec::new();
    let mut current: Option<String> = None;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            current = line
                .strip_prefix("[remote \"")
                .and_then(|r| r.strip_suffix("\"]"))
                .map(str::to_string);
            continue;
        }
        let Some(name) = &current else { continue };
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case("url")
                && !remotes.iter().any(|(n, _): &(String, String)| n == name)
            {
                remotes.push((name.clone(), v.trim().trim_matches('"').to_string()));
            }
        }
    }
    remotes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn remotes_normalize_to_host_and_path_without_credentials() {
        for (url, want) in [
            ("git@github.com:org/repo.git", "github.com/org/repo"),
            ("https://github.com/org/repo.git", "github.com/org/repo"),
            ("https://github.com/org/repo", "github.com/org/repo"),
            (
                "https://x-access-token:ghs_SECRET@GitHub.com/org/repo.git",
                "github.com/org/repo",
            ),
            ("ssh://git@github.com/org/repo.git/", "github.com/org/repo"),
            (
                "ssh://git@gitlab.example.com:2222/group/sub/proj.git",
                "gitlab.example.com:2222/group/sub/proj",
            ),
            ("file:///srv/git/repo.git", "/srv/git/repo"),
            ("/srv/git/repo.git", "/srv/git/repo"),
        ] {
            assert_eq!(normalize_remote(url), want, "{url}");
        }
    }

    #[test]
    fn config_remotes_prefer_origin() {
        let config = "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = git@github.com:up/repo.git\n\
                      [remote \"origin\"]\n\turl = https://github.com/me/repo\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n";
        let remotes = config_remotes(config);
        assert_eq!(remotes.len(), 2);
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join(".git")).expect("git dir");
        std::fs::write(dir.path().join(".git/config"), config).expect("config");
        assert_eq!(
            remote_url(&dir.path().join(".git")),
            Some(("origin".into(), "https://github.com/me/repo".into()))
        );
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn ci_variables_name_the_repository_and_the_checkout_makes_paths_relative() {
        let ctx = Path::new("/buildkite/builds/agent-7/org/app/services/api");
        let df = ctx.join("Dockerfile");
        let build = BuildIdentity {
            context: ctx,
            dockerfile: &df,
            target: Some("prod"),
            platform: None,
        };
        let key = RouteKey::for_build(
            &build,
            &env_of(&[
                ("BUILDKITE_REPO", "git@github.com:org/app.git"),
                (
                    "BUILDKITE_BUILD_CHECKOUT_PATH",
                    "/buildkite/builds/agent-7/org/app",
                ),
            ]),
        );
        assert_eq!(key.key, "github.com/org/app:services/api/Dockerfile:prod:");
        assert_eq!(key.source, "BUILDKITE_REPO");
        // Another agent's checkout of the same repository: the same key.
        let ctx2 = Path::new("/buildkite/builds/agent-2/org/app/services/api");
        let df2 = ctx2.join("Dockerfile");
        let key2 = RouteKey::for_build(
            &BuildIdentity {
                context: ctx2,
                dockerfile: &df2,
                target: Some("prod"),
                platform: None,
            },
            &env_of(&[
                ("BUILDKITE_REPO", "https://github.com/org/app.git"),
                (
                    "BUILDKITE_BUILD_CHECKOUT_PATH",
                    "/buildkite/builds/agent-2/org/app",
                ),
            ]),
        );
        assert_eq!(key, key2);
        assert_eq!(key.shared_key(), key2.shared_key());

        let gh = RouteKey::for_build(
            &BuildIdentity {
                context: Path::new("/home/runner/work/app/app"),
                dockerfile: Path::new("/home/runner/work/app/app/Dockerfile"),
                target: None,
                platform: Some("linux/arm64"),
            },
            &env_of(&[
                ("GITHUB_REPOSITORY", "org/app"),
                ("GITHUB_SERVER_URL", "https://github.com"),
                ("GITHUB_WORKSPACE", "/home/runner/work/app/app"),
            ]),
        );
        assert_eq!(gh.key, "github.com/org/app:Dockerfile::linux/arm64");
        let gl = RouteKey::for_build(
            &BuildIdentity {
                context: Path::new("/builds/group/app"),
                dockerfile: Path::new("/builds/group/app/docker/Dockerfile"),
                target: None,
                platform: None,
            },
            &env_of(&[
                ("CI_PROJECT_PATH", "group/app"),
                ("CI_SERVER_HOST", "gitlab.example.com"),
                ("CI_PROJECT_DIR", "/builds/group/app"),
            ]),
        );
        assert_eq!(gl.key, "gitlab.example.com/group/app:docker/Dockerfile::");
    }

    #[test]
    fn without_ci_the_git_remote_then_the_path_names_the_repository() {
        let dir = tempfile::tempdir().expect("dir");
        let top = dir.path().join("checkout");
        let ctx = top.join("app");
        std::fs::create_dir_all(&ctx).expect("ctx");
        let df = ctx.join("Dockerfile");
        let build = BuildIdentity {
            context: &ctx,
            dockerfile: &df,
            target: None,
            platform: None,
        };
        let none = env_of(&[]);
        let plain = RouteKey::for_build(&build, &none);
        assert_eq!(plain.key, format!("{}:Dockerfile::", ctx.display()));
        std::fs::create_dir(top.join(".git")).expect("git");
        std::fs::write(
            top.join(".git/config"),
            "[remote \"origin\"]\n\turl = https://tok@example.com/org/app.git\n",
        )
        .expect("config");
        let git = RouteKey::for_build(&build, &none);
        assert_eq!(git.key, "example.com/org/app:app/Dockerfile::");
        assert_eq!(git.source, "git remote origin");
        // A worktree: .git is a file pointing into the main checkout.
        let wt = dir.path().join("wt");
        std::fs::create_dir_all(top.join(".git/worktrees/wt")).expect("wt gitdir");
        std::fs::write(top.join(".git/worktrees/wt/commondir"), "../..\n").expect("commondir");
        std::fs::create_dir_all(wt.join("app")).expect("wt");
        std::fs::write(
            wt.join(".git"),
            format!("gitdir: {}\n", top.join(".git/worktrees/wt").display()),
        )
        .expect(".git file");
        let wt_ctx = wt.join("app");
        let wt_df = wt_ctx.join("Dockerfile");
        let in_worktree = RouteKey::for_build(
            &BuildIdentity {
                context: &wt_ctx,
                dockerfile: &wt_df,
                target: None,
                platform: None,
            },
            &none,
        );
        assert_eq!(in_worktree.key, git.key);
    }

    #[test]
    fn a_remote_context_is_named_by_its_url_without_credentials() {
        let k = RouteKey::for_remote(
            "https://user:tok3n@GitHub.com/o/r.git?access_token=s3cret#main:sub",
            "Dockerfile",
            Some("t"),
            None,
        );
        assert_eq!(k.key, "github.com/o/r#main:sub:Dockerfile:t:");
        assert!(!k.key.contains("tok3n") && !k.key.contains("s3cret"));
        // Over ssh, the same repository and ref give the same key.
        let ssh = RouteKey::for_remote(
            "git@github.com:o/r.git#main:sub",
            "Dockerfile",
            Some("t"),
            None,
        );
        assert_eq!(ssh.key, k.key);
    }

    #[test]
    fn the_shared_key_is_a_digest_of_the_route_key() {
        let a = RouteKey::given("github.com/org/app:Dockerfile::");
        let b = RouteKey::given("github.com/org/other:Dockerfile::");
        assert_eq!(a.shared_key().len(), 32);
        assert_ne!(a.shared_key(), b.shared_key());
        assert!(!a.shared_key().contains("github"));
    }
}
