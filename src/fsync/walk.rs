//! Walking a local directory the way BuildKit's file-sync sender does:
//! depth-first, each directory's entries in byte order of their names,
//! include/exclude patterns and follow paths applied, parents of surviving
//! entries always sent before them, hardlinks among sent entries linked.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::patterns::{clean_path, filepath_match, MatchInfo, PatternError, PatternMatcher};
use super::stat::{make_stat, rel_to_string, MODE_DIR, MODE_SYMLINK};
use crate::proto::fsutil::types::Stat;

/// Filters the daemon asks for, in the daemon's words.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include_patterns: Vec<String>,
    pub exclude_patterns: Vec<String>,
    pub follow_paths: Vec<String>,
}

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A pattern of the context's ignore file (exclude patterns).
    #[error(".dockerignore: {0}")]
    ExcludePattern(PatternError),
    /// A pattern the daemon asked for (include patterns, follow paths).
    #[error("include patterns: {0}")]
    IncludePattern(PatternError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("file name is not valid UTF-8 and cannot be sent: {0}")]
    NonUtf8Name(String),
    #[error("walk stopped: the receiver went away")]
    Stopped,
}

/// One entry the walk decided to send.
#[derive(Debug)]
pub struct WalkEntry {
    pub stat: Stat,
    /// Absolute path on this machine, for reading the content later.
    pub abs: PathBuf,
}

struct Matchers {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
    only_prefix_includes: bool,
    only_prefix_exclude_exceptions: bool,
}

const PATTERN_CHARS: &[char] = &['*', '[', ']', '?', '^', '\\'];

impl Matchers {
    fn new(root: &Path, filter: &Filter) -> Result<Self, WalkError> {
        let mut include_patterns = filter.include_patterns.clone();
        if !filter.follow_paths.is_empty() {
            if let Some(targets) = follow_links(root, &filter.follow_paths)? {
                include_patterns.extend(targets);
                include_patterns.sort();
                include_patterns = dedupe_paths(include_patterns).unwrap_or_default();
            }
        }
        let include = if include_patterns.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(&include_patterns).map_err(WalkError::IncludePattern)?)
        };
        let exclude = if filter.exclude_patterns.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(&filter.exclude_patterns).map_err(WalkError::ExcludePattern)?)
        };
        let only_prefix_includes = include.as_ref().is_none_or(|m| {
            m.patterns()
                .iter()
                .filter(|p| !p.is_exclusion())
                .all(|p| !p.without_trailing_glob().contains(PATTERN_CHARS))
        });
        let only_prefix_exclude_exceptions = exclude.as_ref().is_none_or(|m| {
            m.patterns()
                .iter()
                .filter(|p| p.is_exclusion())
                .all(|p| !p.without_trailing_glob().contains(PATTERN_CHARS))
        });
        Ok(Matchers {
            include,
            exclude,
            only_prefix_includes,
            only_prefix_exclude_exceptions,
        })
    }
}

/// A directory on the current path that has not been sent yet, because
/// nothing below it survived the filters so far.
struct Pending {
    entry: WalkEntry,
}

struct Walker<F> {
    matchers: Matchers,
    hardlinks: HashMap<(u64, u64), String>,
    emit: F,
}

/// Walks `root`, calling `emit` for every entry to send, in protocol order.
/// `emit` returns false to stop the walk early.
pub fn walk<F>(root: &Path, filter: &Filter, emit: F) -> Result<(), WalkError>
where
    F: FnMut(WalkEntry) -> bool,
{
    let matchers = Matchers::new(root, filter)?;
    let mut walker = Walker {
        matchers,
        hardlinks: HashMap::new(),
        emit,
    };
    let mut pending = Vec::new();
    walker.walk_dir(
        root,
        b"",
        &MatchInfo::default(),
        &MatchInfo::default(),
        &mut pending,
    )
}

impl<F> Walker<F>
where
    F: FnMut(WalkEntry) -> bool,
{
    fn walk_dir(
        &mut self,
        dir: &Path,
        rel_dir: &[u8],
        parent_include: &MatchInfo,
        parent_exclude: &MatchInfo,
        pending: &mut Vec<Pending>,
    ) -> Result<(), WalkError> {
        let mut names: Vec<OsString> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|source| WalkError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?,
            // A directory that vanished while walking is skipped, like the
            // reference sender does.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(WalkError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

        for name in names {
            let mut rel = Vec::with_capacity(rel_dir.len() + 1 + name.len());
            if !rel_dir.is_empty() {
                rel.extend_from_slice(rel_dir);
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let abs = dir.join(&name);
            let meta = match std::fs::symlink_metadata(&abs) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(WalkError::Io { path: abs, source }),
            };
            let is_dir = meta.is_dir();
            let mut skip = false;
            let mut include_info = MatchInfo::default();
            let mut exclude_info = MatchInfo::default();

            if let Some(include) = &self.matchers.include {
                let (hit, info) = include
                    .matches_using_parent(&rel, parent_include)
                    .map_err(WalkError::IncludePattern)?;
                include_info = info;
                if !hit {
                    if is_dir
                        && self.matchers.only_prefix_includes
                        && !could_contain(include, &rel, false)
                    {
                        continue;
                    }
                    skip = true;
                }
            }
            if let Some(exclude) = &self.matchers.exclude {
                let (hit, info) = exclude
                    .matches_using_parent(&rel, parent_exclude)
                    .map_err(WalkError::ExcludePattern)?;
                exclude_info = info;
                if hit {
                    if is_dir
                        && self.matchers.only_prefix_exclude_exceptions
                        && (!exclude.has_exclusions() || !could_contain(exclude, &rel, true))
                    {
                        continue;
                    }
                    skip = true;
                }
            }

            let entry = if skip && !is_dir {
                None
            } else {
                Some(self.make_entry(&abs, &rel, &meta)?)
            };
            if !skip {
                if let Some(entry) = entry {
                    self.flush_pending(pending)?;
                    let descend = is_dir;
                    self.send(entry)?;
                    if descend {
                        let mut inner = Vec::new();
                        self.walk_dir(&abs, &rel, &include_info, &exclude_info, &mut inner)?;
                    }
                }
                continue;
            }
            if let Some(entry) = entry {
                // A filtered-out directory: descend, and send it only if
                // something below it survives.
                pending.push(Pending { entry });
                self.walk_dir(&abs, &rel, &include_info, &exclude_info, pending)?;
                if pending.last().is_some_and(|p| p.entry.abs == abs) {
                    pending.pop();
                }
            }
        }
        Ok(())
    }

    fn flush_pending(&mut self, pending: &mut Vec<Pending>) -> Result<(), WalkError> {
        for p in pending.drain(..) {
            self.send(p.entry)?;
        }
        Ok(())
    }

    fn send(&mut self, entry: WalkEntry) -> Result<(), WalkError> {
        if (self.emit)(entry) {
            Ok(())
        } else {
            Err(WalkError::Stopped)
        }
    }

    fn make_entry(
        &mut self,
        abs: &Path,
        rel: &[u8],
        meta: &std::fs::Metadata,
    ) -> Result<WalkEntry, WalkError> {
        let rel_str = rel_to_string(std::ffi::OsStr::from_bytes(rel))
            .ok_or_else(|| WalkError::NonUtf8Name(rel.escape_ascii().to_string()))?;
        let mut stat = make_stat(abs, rel_str, meta).map_err(|source| WalkError::Io {
            path: abs.to_path_buf(),
            source,
        })?;
        if stat.mode & (MODE_DIR | MODE_SYMLINK) == 0 && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.hardlinks.get(&key) {
                stat.linkname = first.clone();
                stat.size = 0;
            } else {
                self.hardlinks.insert(key, stat.path.clone());
            }
        }
        Ok(WalkEntry {
            stat,
            abs: abs.to_path_buf(),
        })
    }
}

/// Whether a pattern of the wanted kind names something below `dir`.
fn could_contain(matcher: &PatternMatcher, dir: &[u8], exclusions: bool) -> bool {
    let mut dir_slash = dir.to_vec();
    dir_slash.push(b'/');
    matcher
        .patterns()
        .iter()
        .filter(|p| p.is_exclusion() == exclusions)
        .any(|p| {
            let mut s = p.without_trailing_glob().as_bytes().to_vec();
            s.push(b'/');
            s.starts_with(&dir_slash)
        })
}

/// Sorted, with paths below an earlier path dropped; `None` when the root
/// itself is in the list (everything is included).
fn dedupe_paths(sorted: Vec<String>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(sorted.len());
    for s in sorted {
        if s == "." {
            return None;
        }
        if let Some(last) = out.last() {
            if s.starts_with(&format!("{last}/")) {
                continue;
            }
        }
        out.push(s);
    }
    Some(out)
}

/// Resolves follow paths: every symlink met on the way is included and its
/// target followed, so a Dockerfile that is a link still arrives with its
/// target. Targets are confined to the root: absolute ones are taken relative
/// to it and `..` cannot climb above it.
fn follow_links(root: &Path, paths: &[String]) -> Result<Option<Vec<String>>, WalkError> {
    let mut resolved = std::collections::BTreeSet::new();
    for p in paths {
        resolve_follow(root, p, &mut resolved, 0)?;
    }
    Ok(dedupe_paths(resolved.into_iter().collect()))
}

const MAX_LINK_DEPTH: usize = 255;

fn resolve_follow(
    root: &Path,
    path: &str,
    resolved: &mut std::collections::BTreeSet<String>,
    depth: usize,
) -> Result<(), WalkError> {
    if depth > MAX_LINK_DEPTH {
        return Ok(());
    }
    let cleaned = clean_path(&format!("./{}", path.trim_start_matches('/')));
    if cleaned == "." {
        resolved.insert(".".into());
        return Ok(());
    }
    let mut current = String::new();
    let mut rest: &str = &cleaned;
    loop {
        let (part, tail) = match rest.split_once('/') {
            Some((a, b)) => (a, b),
            None => (rest, ""),
        };
        current = if current.is_empty() {
            part.to_string()
        } else {
            format!("{current}/{part}")
        };
        let targets = read_symlink(root, &current, true)?;
        if (tail.is_empty() || targets.is_some()) && resolved.contains(&current) {
            return Ok(());
        }
        if let Some(targets) = targets {
            resolved.insert(current.clone());
            for target in targets {
                let next = if tail.is_empty() {
                    target
                } else {
                    format!("{target}/{tail}")
                };
                resolve_follow(root, &next, resolved, depth + 1)?;
            }
            return Ok(());
        }
        if tail.is_empty() {
            resolved.insert(current);
            return Ok(());
        }
        rest = tail;
    }
}

fn read_symlink(
    root: &Path,
    rel: &str,
    allow_wildcard: bool,
) -> Result<Option<Vec<String>>, WalkError> {
    let (parent, base) = match rel.rsplit_once('/') {
        Some((a, b)) => (a, b),
        None => ("", rel),
    };
    if allow_wildcard && contains_wildcards(base) {
        let dir = root.join(parent);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(None);
        };
        // Go's `filepath.Match`, a malformed pattern matching nothing.
        let mut names: Vec<Vec<u8>> = rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().into_vec())
            .filter(|n| filepath_match(base.as_bytes(), n).unwrap_or(false))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            let child = if parent.is_empty() {
                name
            } else {
                format!("{parent}/{name}")
            };
            if let Some(t) = read_symlink(root, &child, false)? {
                out.extend(t);
            }
        }
        return Ok(Some(out).filter(|o| !o.is_empty()));
    }
    let abs = root.join(rel);
    let meta = match std::fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(source) => return Err(WalkError::Io { path: abs, source }),
    };
    if !meta.file_type().is_symlink() {
        return Ok(None);
    }
    let link = std::fs::read_link(&abs).map_err(|source| WalkError::Io {
        path: abs.clone(),
        source,
    })?;
    let Some(link) = link.to_str() else {
        return Ok(None);
    };
    let link = clean_path(link);
    if link.starts_with('/') {
        return Ok(Some(vec![link]));
    }
    Ok(Some(vec![clean_path(&format!("/{parent}/{link}"))]))
}

fn contains_wildcards(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn paths(root: &Path, filter: &Filter) -> Vec<String> {
        let mut out = Vec::new();
        walk(root, filter, |e| {
            out.push(e.stat.path);
            true
        })
        .expect("walk");
        out
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        for dir in ["a", "a/x", "b", "node_modules/pkg"] {
            fs::create_dir_all(r.join(dir)).expect("mkdir");
        }
        for f in [
            "a.txt",
            "a/x/1",
            "a/y",
            "b/keep.md",
            "b/drop.md",
            "node_modules/pkg/i.js",
            "Dockerfile",
        ] {
            fs::write(r.join(f), f).expect("write");
        }
        d
    }

    #[test]
    fn order_is_per_directory_depth_first() {
        let d = tree();
        assert_eq!(
            paths(d.path(), &Filter::default()),
            [
                "Dockerfile",
                "a",
                "a/x",
                "a/x/1",
                "a/y",
                "a.txt",
                "b",
                "b/drop.md",
                "b/keep.md",
                "node_modules",
                "node_modules/pkg",
                "node_modules/pkg/i.js"
            ]
        );
    }

    #[test]
    fn excludes_with_reinclusion_send_parents_first() {
        let d = tree();
        let f = Filter {
            exclude_patterns: vec!["node_modules".into(), "b".into(), "!b/keep.md".into()],
            ..Default::default()
        };
        assert_eq!(
            paths(d.path(), &f),
            [
                "Dockerfile",
                "a",
                "a/x",
                "a/x/1",
                "a/y",
                "a.txt",
                "b",
                "b/keep.md"
            ]
        );
    }

    #[test]
    fn includes_keep_only_named_paths_and_their_parents() {
        let d = tree();
        let f = Filter {
            include_patterns: vec!["a/x".into()],
            ..Default::default()
        };
        assert_eq!(paths(d.path(), &f), ["a", "a/x", "a/x/1"]);
    }

    #[test]
    fn follow_paths_include_link_targets_but_stay_in_root() {
        let d = tree();
        std::os::unix::fs::symlink("a/y", d.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink("../../../etc/passwd", d.path().join("escape"))
            .expect("symlink");
        let f = Filter {
            follow_paths: vec!["link".into(), "escape".into(), "../outside".into()],
            ..Default::default()
        };
        assert_eq!(paths(d.path(), &f), ["a", "a/y", "escape", "link"]);
    }

    #[test]
    fn hardlinks_point_at_first_sent_path() {
        let d = tree();
        fs::hard_link(d.path().join("a.txt"), d.path().join("z")).expect("link");
        let mut stats = Vec::new();
        walk(d.path(), &Filter::default(), |e| {
            stats.push(e.stat);
            true
        })
        .expect("walk");
        let z = stats.iter().find(|s| s.path == "z").expect("z sent");
        assert_eq!(z.linkname, "a.txt");
        assert_eq!(z.size, 0);
    }
}
