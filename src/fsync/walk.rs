//! Walking a local directory the way BuildKit's file-sync sender does:
//! depth-first, each directory's entries in byte order of their names,
//! include/exclude patterns and follow paths applied, parents of surviving
//! entries always sent before them, hardlinks among sent entries linked.
//!
//! The walk goes through directory descriptors only (see [`super::dirfd`]):
//! each directory is opened from its parent's descriptor without following
//! a symlink, and checked to be the directory that was announced, so a
//! directory swapped for a link while the walk runs can never take it
//! outside the context. It keeps its own stack instead of recursing, so the
//! depth of a tree is bounded only by the length of a path the daemon can
//! create ([`PATH_MAX`]). Names are bytes from end to end.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bytes::Bytes;

use super::dirfd::{is_dir, is_symlink, Dir, Stat as Stat64, PATH_MAX};
use super::patterns::{clean_path, filepath_match, MatchInfo, PatternError, PatternMatcher};
use super::stat::{make_stat, MODE_DIR, MODE_SYMLINK};
use crate::proto::fsutil::types::Stat;
use crate::text::escape_bytes;

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
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    /// The kernel takes paths below this length only, and the daemon has
    /// to create this one below its own directory.
    #[error("cannot read {path}: file name too long")]
    TooLong { path: String },
    #[error("{path} changed while the build context was being sent")]
    Changed { path: String },
    #[error("walk stopped: the receiver went away")]
    Stopped,
}

/// One entry the walk decided to send, and the identity of the file it
/// describes: a file opened later to send its content must be this one.
#[derive(Debug)]
pub struct WalkEntry {
    pub stat: Stat,
    pub dev: u64,
    pub ino: u64,
    /// It has other hard links.
    linked: bool,
}

/// `root/rel` for messages, escaped.
pub fn shown(root: &Path, rel: &[u8]) -> String {
    let mut p = root.as_os_str().as_bytes().to_vec();
    if !rel.is_empty() {
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(rel);
    }
    escape_bytes(&p)
}

/// The include and exclude matchers and what the walk needs to know of
/// them. Every use of the pattern matcher by the walk goes through here.
struct Matchers {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
    only_prefix_includes: bool,
    only_prefix_exclude_exceptions: bool,
}

const PATTERN_CHARS: &[char] = &['*', '[', ']', '?', '^', '\\'];

/// What the filters make of one entry.
enum Verdict {
    /// Sent (a directory: sent and walked).
    Send,
    /// Not sent, but a directory that is walked: sent only if something
    /// below it is.
    Walk,
    /// Neither sent nor walked.
    Skip,
}

impl Matchers {
    fn new(root: &Dir, filter: &Filter) -> Result<Self, WalkError> {
        let mut include_patterns = filter.include_patterns.clone();
        if !filter.follow_paths.is_empty() {
            if let Some(targets) = follow_links(root, &filter.follow_paths)? {
                // As fsutil: appended to the include patterns as they are,
                // and the whole list deduplicated in that order.
                include_patterns.extend(targets);
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

    /// The verdict on `rel`, with the per-pattern results its children
    /// start from.
    fn judge(
        &self,
        rel: &[u8],
        is_dir: bool,
        parent_include: &MatchInfo,
        parent_exclude: &MatchInfo,
    ) -> Result<(Verdict, MatchInfo, MatchInfo), WalkError> {
        let mut skip = false;
        let mut include_info = MatchInfo::default();
        let mut exclude_info = MatchInfo::default();
        if let Some(include) = &self.include {
            let (hit, info) = include
                .matches_using_parent(rel, parent_include)
                .map_err(WalkError::IncludePattern)?;
            include_info = info;
            if !hit {
                if is_dir && self.only_prefix_includes && !could_contain(include, rel, false) {
                    return Ok((Verdict::Skip, include_info, exclude_info));
                }
                skip = true;
            }
        }
        if let Some(exclude) = &self.exclude {
            let (hit, info) = exclude
                .matches_using_parent(rel, parent_exclude)
                .map_err(WalkError::ExcludePattern)?;
            exclude_info = info;
            if hit {
                if is_dir
                    && self.only_prefix_exclude_exceptions
                    && (!exclude.has_exclusions() || !could_contain(exclude, rel, true))
                {
                    return Ok((Verdict::Skip, include_info, exclude_info));
                }
                skip = true;
            }
        }
        let verdict = match (skip, is_dir) {
            (false, _) => Verdict::Send,
            (true, true) => Verdict::Walk,
            (true, false) => Verdict::Skip,
        };
        Ok((verdict, include_info, exclude_info))
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

/// Whether a name matches a follow path's last component, which may hold
/// wildcards: Go's `filepath.Match`, as fsutil uses, a malformed pattern
/// matching nothing.
fn matches_name(pattern: &str, name: &[u8]) -> bool {
    filepath_match(pattern.as_bytes(), name).unwrap_or(false)
}

/// One directory being walked.
struct Frame {
    dir: Dir,
    /// Its entries, sorted; taken one by one.
    names: std::vec::IntoIter<Vec<u8>>,
    /// Length of its path in the walk's path buffer.
    rel_len: usize,
    include: MatchInfo,
    exclude: MatchInfo,
    /// Its place in the pending list while it is not sent.
    pending_at: Option<usize>,
}

struct Walker<'a, F> {
    root_path: &'a Path,
    hardlinks: HashMap<(u64, u64), Bytes>,
    /// Directories on the current path that were filtered out and not sent
    /// yet: sent, in order, before the first entry below them that is.
    pending: Vec<WalkEntry>,
    emit: F,
}

/// Walks the directory `root` (shown as `root_path` in messages), calling
/// `emit` for every entry to send, in protocol order. `emit` returns false
/// to stop the walk early.
pub fn walk<F>(root: &Dir, root_path: &Path, filter: &Filter, emit: F) -> Result<(), WalkError>
where
    F: FnMut(WalkEntry) -> bool,
{
    super::dirfd::raise_open_files_limit();
    let matchers = Matchers::new(root, filter)?;
    let mut walker = Walker {
        root_path,
        hardlinks: HashMap::new(),
        pending: Vec::new(),
        emit,
    };
    let first = root.try_clone().map_err(|e| walker.io_error(b"", &e))?;
    let names = walker.list(&first, b"")?;
    let mut stack = vec![Frame {
        dir: first,
        names: names.into_iter(),
        rel_len: 0,
        include: MatchInfo::default(),
        exclude: MatchInfo::default(),
        pending_at: None,
    }];
    let mut rel: Vec<u8> = Vec::new();
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            // Nothing below a filtered-out directory was sent: neither is it.
            if let Some(at) = frame.pending_at {
                walker.pending.truncate(at);
            }
            stack.pop();
            rel.truncate(stack.last().map_or(0, |f| f.rel_len));
            continue;
        };
        rel.truncate(frame.rel_len);
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(&name);
        if rel.len() >= PATH_MAX {
            return Err(WalkError::TooLong {
                path: shown(root_path, &rel),
            });
        }
        let st = match frame.dir.stat_at(&name) {
            Ok(st) => st,
            // Gone since the directory was read: skipped, as fsutil does.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(walker.io_error(&rel, &e)),
        };
        let entry_is_dir = is_dir(&st);
        let (verdict, include, exclude) =
            matchers.judge(&rel, entry_is_dir, &frame.include, &frame.exclude)?;
        let pending_at = match verdict {
            Verdict::Skip => continue,
            Verdict::Send => {
                let Some(entry) = walker.entry(&frame.dir, &name, &rel, &st)? else {
                    continue;
                };
                walker.flush_pending()?;
                walker.send(entry)?;
                None
            }
            Verdict::Walk => {
                let Some(entry) = walker.entry(&frame.dir, &name, &rel, &st)? else {
                    continue;
                };
                walker.pending.push(entry);
                Some(walker.pending.len() - 1)
            }
        };
        if !entry_is_dir {
            continue;
        }
        let Some(sub) = walker.open_checked(&frame.dir, &name, &rel, &st)? else {
            if let Some(at) = pending_at {
                walker.pending.truncate(at);
            }
            continue;
        };
        let names = walker.list(&sub, &rel)?;
        stack.push(Frame {
            dir: sub,
            names: names.into_iter(),
            rel_len: rel.len(),
            include,
            exclude,
            pending_at,
        });
    }
    Ok(())
}

impl<F> Walker<'_, F>
where
    F: FnMut(WalkEntry) -> bool,
{
    fn io_error(&self, rel: &[u8], e: &std::io::Error) -> WalkError {
        WalkError::Io {
            path: shown(self.root_path, rel),
            reason: crate::error::io_reason(e),
        }
    }

    /// The sorted names of a directory.
    fn list(&self, dir: &Dir, rel: &[u8]) -> Result<Vec<Vec<u8>>, WalkError> {
        let mut names = dir.read_names().map_err(|e| self.io_error(rel, &e))?;
        names.sort_unstable();
        Ok(names)
    }

    /// Opens the subdirectory `name` whose `fstatat` was `st`, if it is
    /// still that directory. One that vanished, or was replaced (by a link,
    /// a file, another directory) since, is not walked: fsutil skips a
    /// directory that vanished, and the replacement was never announced.
    fn open_checked(
        &self,
        parent: &Dir,
        name: &[u8],
        rel: &[u8],
        st: &Stat64,
    ) -> Result<Option<Dir>, WalkError> {
        let sub = match parent.open_dir(name) {
            Ok(d) => d,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(self.io_error(rel, &e)),
        };
        let now = sub.stat().map_err(|e| self.io_error(rel, &e))?;
        if now.st_dev != st.st_dev || now.st_ino != st.st_ino {
            return Ok(None);
        }
        Ok(Some(sub))
    }

    fn flush_pending(&mut self) -> Result<(), WalkError> {
        for entry in std::mem::take(&mut self.pending) {
            self.send(entry)?;
        }
        Ok(())
    }

    fn send(&mut self, mut entry: WalkEntry) -> Result<(), WalkError> {
        self.link_hardlinks(&mut entry);
        if (self.emit)(entry) {
            Ok(())
        } else {
            Err(WalkError::Stopped)
        }
    }

    /// A file whose inode was sent before under another path is announced
    /// as a link to that path, with its own size, as fsutil announces it.
    fn link_hardlinks(&mut self, entry: &mut WalkEntry) {
        let stat = &mut entry.stat;
        if !entry.linked || stat.mode & (MODE_DIR | MODE_SYMLINK) != 0 {
            return;
        }
        let key = (entry.dev, entry.ino);
        match self.hardlinks.get(&key) {
            Some(first) => stat.linkname = first.clone(),
            None => {
                self.hardlinks.insert(key, stat.path.clone());
            }
        }
    }

    /// The entry to send for `name`, whose `fstatat` was `st`; `None`
    /// when it vanished meanwhile (skipped, as fsutil does).
    fn entry(
        &self,
        dir: &Dir,
        name: &[u8],
        rel: &[u8],
        st: &Stat64,
    ) -> Result<Option<WalkEntry>, WalkError> {
        let stat = match make_stat(dir, name, Bytes::copy_from_slice(rel), st) {
            Ok(stat) => stat,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // readlinkat of what is no longer a symlink.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(WalkError::Changed {
                    path: shown(self.root_path, rel),
                })
            }
            Err(e) => return Err(self.io_error(rel, &e)),
        };
        Ok(Some(WalkEntry {
            stat,
            dev: st.st_dev,
            ino: st.st_ino,
            linked: st.st_nlink > 1,
        }))
    }
}

/// In order, with paths below an earlier path dropped; `None` when the
/// root itself is in the list (everything is included).
fn dedupe_paths(paths: Vec<String>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    for s in paths {
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
fn follow_links(root: &Dir, paths: &[String]) -> Result<Option<Vec<String>>, WalkError> {
    let mut resolved = BTreeSet::new();
    for p in paths {
        resolve_follow(root, p, &mut resolved, 0)?;
    }
    Ok(dedupe_paths(resolved.into_iter().collect()))
}

const MAX_LINK_DEPTH: usize = 255;

fn resolve_follow(
    root: &Dir,
    path: &str,
    resolved: &mut BTreeSet<String>,
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

/// The directory `parent` (relative, `""` for the root) below `root`,
/// reached without following a symlink; `None` when there is no such
/// directory.
fn dir_below(root: &Dir, parent: &str) -> Result<Option<Dir>, WalkError> {
    let opened = if parent.is_empty() {
        root.try_clone()
    } else {
        root.open_dir_beneath(parent.as_bytes())
    };
    match opened {
        Ok(d) => Ok(Some(d)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(WalkError::Io {
            path: escape_bytes(parent.as_bytes()),
            reason: crate::error::io_reason(&e),
        }),
    }
}

fn read_symlink(
    root: &Dir,
    rel: &str,
    allow_wildcard: bool,
) -> Result<Option<Vec<String>>, WalkError> {
    let (parent, base) = match rel.rsplit_once('/') {
        Some((a, b)) => (a, b),
        None => ("", rel),
    };
    let Some(dir) = dir_below(root, parent)? else {
        return Ok(None);
    };
    if allow_wildcard && contains_wildcards(base) {
        let Ok(mut names) = dir.read_names() else {
            return Ok(None);
        };
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if !matches_name(base, &name) {
                continue;
            }
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
    let st = match dir.stat_at(base.as_bytes()) {
        Ok(st) => st,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(WalkError::Io {
                path: escape_bytes(rel.as_bytes()),
                reason: crate::error::io_reason(&e),
            })
        }
    };
    if !is_symlink(&st) {
        return Ok(None);
    }
    let link = dir
        .read_link_at(base.as_bytes())
        .map_err(|e| WalkError::Io {
            path: escape_bytes(rel.as_bytes()),
            reason: crate::error::io_reason(&e),
        })?;
    let Ok(link) = String::from_utf8(link) else {
        return Ok(None);
    };
    let link = clean_path(&link);
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

    fn stats(root: &Path, filter: &Filter) -> Vec<Stat> {
        let mut out = Vec::new();
        let dir = Dir::open(root).expect("open root");
        walk(&dir, root, filter, |e| {
            out.push(e.stat);
            true
        })
        .expect("walk");
        out
    }

    fn paths(root: &Path, filter: &Filter) -> Vec<String> {
        stats(root, filter)
            .into_iter()
            .map(|s| String::from_utf8_lossy(&s.path).into_owned())
            .collect()
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
    fn a_filtered_directory_with_nothing_kept_below_is_not_sent() {
        let d = tree();
        let f = Filter {
            exclude_patterns: vec!["a".into(), "b".into(), "!b/nothing-here".into()],
            ..Default::default()
        };
        assert_eq!(
            paths(d.path(), &f),
            [
                "Dockerfile",
                "a.txt",
                "node_modules",
                "node_modules/pkg",
                "node_modules/pkg/i.js"
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
    fn hardlinks_point_at_first_sent_path_with_their_size() {
        let d = tree();
        fs::hard_link(d.path().join("a.txt"), d.path().join("z")).expect("link");
        let stats = stats(d.path(), &Filter::default());
        let z = stats.iter().find(|s| &s.path[..] == b"z").expect("z sent");
        assert_eq!(&z.linkname[..], b"a.txt");
        // fsutil sends a link's own size (its walker sets it after the
        // link is found), not 0.
        assert_eq!(z.size, 5);
    }

    #[test]
    fn names_that_are_not_utf8_are_sent_as_they_are() {
        let d = tempfile::tempdir().expect("tempdir");
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
        fs::create_dir(d.path().join(name)).expect("mkdir");
        let inner = std::ffi::OsStr::from_bytes(b"f\xffx");
        fs::write(d.path().join(name).join(inner), "x").expect("write");
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(b"t\xfe"), d.path().join("l"))
            .expect("symlink");
        let stats = stats(d.path(), &Filter::default());
        assert_eq!(&stats[0].path[..], b"caf\xe9");
        assert_eq!(&stats[1].path[..], b"caf\xe9/f\xffx");
        let l = stats.iter().find(|s| &s.path[..] == b"l").expect("l");
        assert_eq!(&l.linkname[..], b"t\xfe");
    }

    #[test]
    fn a_deep_tree_is_walked_without_recursion_and_a_too_deep_one_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = Dir::open(d.path()).expect("open");
        let mut cur = root.try_clone().expect("dup");
        for _ in 0..2000 {
            cur.mkdir_at(b"a", 0o755).expect("mkdir");
            cur = cur.open_dir(b"a").expect("open");
        }
        std::mem::drop(cur);
        let mut n = 0;
        walk(&root, d.path(), &Filter::default(), |_| {
            n += 1;
            true
        })
        .expect("walk of 2000 levels");
        assert_eq!(n, 2000);
        let mut cur = root.try_clone().expect("dup");
        for _ in 0..2100 {
            match cur.mkdir_at(b"a", 0o755) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("mkdir: {e}"),
            }
            cur = cur.open_dir(b"a").expect("open");
        }
        std::mem::drop(cur);
        let err = walk(&root, d.path(), &Filter::default(), |_| true).expect_err("too deep");
        assert!(
            err.to_string().ends_with("/a/a/a: file name too long"),
            "{err}"
        );
        root.remove_tree_at(b"a").expect("clean up");
    }
}
