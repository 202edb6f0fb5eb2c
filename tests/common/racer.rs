//! A process of the unprivileged test user `bkdtest` that keeps changing
//! names in a directory while a test runs, as a local attacker would. It is
//! forked from the test and does nothing but system calls on names prepared
//! before the fork (nothing is allocated after a fork in a threaded
//! process), until the test drops it. How often it struck is counted in
//! memory shared with the test, so a test can check the race was on.

#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const TEST_USER: &str = "bkdtest";

/// The test user's uid and gid.
pub fn user_ids() -> (libc::uid_t, libc::gid_t) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&TEST_USER)).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .unwrap_or_else(|| panic!("user {TEST_USER} missing: run scripts/setup.sh"))
}

/// Gives `path` (not what is below it) to the test user.
pub fn give_to_user(path: &Path) {
    let (uid, gid) = user_ids();
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown to the test user");
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

/// The forked attacker; killed and reaped when dropped.
pub struct Racer {
    pid: libc::pid_t,
    count: *mut AtomicU64,
}

impl Racer {
    /// Swaps `a` and `b` with `renameat2(RENAME_EXCHANGE)` in a loop.
    pub fn exchange(a: &Path, b: &Path) -> Racer {
        let (a, b) = (c(a), c(b));
        Racer::start(move |count| loop {
            // SAFETY: a and b are NUL-terminated strings made before the fork.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if rc == 0 {
                count.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// Watches `parent` for bkd's staging directories (`.bkd-output-*`):
    /// renames each away (to `stolen-<name>`) and puts a symlink to
    /// `victim` in its place.
    pub fn hijack_staging(parent: &Path, victim: &Path) -> Racer {
        let parent = c(parent);
        let victim = c(victim);
        // SAFETY: parent is NUL-terminated; the descriptor is inherited.
        let dir = unsafe {
            libc::open(
                parent.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(dir >= 0, "open the shared parent");
        Racer::start(move |count| {
            let mut buf = [0u8; 8192];
            let mut from = [0u8; 300];
            let mut to = [0u8; 300];
            let prefix = b".bkd-output-";
            loop {
                // SAFETY: buf is writable for its length.
                unsafe { libc::lseek(dir, 0, libc::SEEK_SET) };
                let n = unsafe {
                    libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len())
                };
                if n <= 0 {
                    continue;
                }
                let n = n as usize;
                let mut off = 0;
                while off + 19 <= n {
                    let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                    if reclen == 0 {
                        break;
                    }
                    let name = &buf[off + 19..off + reclen];
                    let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
                    let name = &name[..len];
                    off += reclen;
                    let d_type = buf[off - reclen + 18];
                    if !name.starts_with(prefix) || d_type != libc::DT_DIR || len + 8 > 299 {
                        continue;
                    }
                    from[..len].copy_from_slice(name);
                    from[len] = 0;
                    to[..7].copy_from_slice(b"stolen-");
                    to[7..7 + len].copy_from_slice(name);
                    to[7 + len] = 0;
                    // SAFETY: both names are NUL-terminated in their buffers.
                    let moved = unsafe {
                        libc::renameat(dir, from.as_ptr().cast(), dir, to.as_ptr().cast())
                    };
                    if moved == 0 {
                        // SAFETY: as above.
                        unsafe { libc::symlinkat(victim.as_ptr(), dir, from.as_ptr().cast()) };
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    }

    fn start(body: impl FnOnce(&AtomicU64)) -> Racer {
        let (uid, gid) = user_ids();
        // SAFETY: an anonymous shared mapping for one counter.
        let count = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<AtomicU64>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(count, libc::MAP_FAILED, "mmap");
        let count = count.cast::<AtomicU64>();
        // SAFETY: the mapping is zeroed, a valid AtomicU64.
        let counter: &AtomicU64 = unsafe { &*count };
        // SAFETY: the child only makes system calls and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // Raw system calls change only this (the only) thread.
            // SAFETY: plain system calls; the child ends with _exit.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                    || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
                {
                    libc::_exit(3);
                }
            }
            body(counter);
            // SAFETY: leaving the child without running anything of the test.
            unsafe { libc::_exit(0) };
        }
        Racer { pid, count }
    }

    /// How many times it struck so far.
    pub fn strikes(&self) -> u64 {
        // SAFETY: the mapping lives as long as self.
        unsafe { &*self.count }.load(Ordering::Relaxed)
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        // SAFETY: killing and reaping the child this value owns; the
        // mapping is no longer used after.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
            libc::munmap(self.count.cast(), std::mem::size_of::<AtomicU64>());
        }
    }
}
