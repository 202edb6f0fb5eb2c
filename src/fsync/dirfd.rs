//! File-system access through directory file descriptors. Everything that
//! walks a tree another user may be changing (the build context) or writes
//! a tree a daemon describes (a local export) goes through here: names are
//! looked up one component at a time relative to an open directory, never
//! following a symlink, so a directory swapped for a link between two calls
//! cannot lead anywhere else.
//!
//! Opening a path below a directory uses `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6). Where the kernel or a
//! seccomp profile refuses `openat2`, the same walk is done by hand, one
//! `openat(O_NOFOLLOW)` per component, which gives the same guarantee at one
//! system call per component. Extended attributes are read and written with
//! the `*xattrat` calls (Linux 6.13) relative to the directory, or else
//! through the directory's `/proc/self/fd` entry, which names the directory
//! the descriptor holds whatever has been renamed since.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

/// The longest path the kernel takes, terminating NUL included.
pub const PATH_MAX: usize = libc::PATH_MAX as usize;

/// `struct stat` of an entry, as `fstatat` gives it.
pub type Stat = libc::stat;

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn check_long(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Retries a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Whether a name is one component a directory can hold.
pub fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Whether `st` is a directory.
pub fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Whether `st` is a regular file.
pub fn is_file(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// Whether `st` is a symlink.
pub fn is_symlink(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// `fstat` of any descriptor.
pub fn fstat(fd: RawFd) -> io::Result<Stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: Stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// Sets both times of an open file (`futimens`).
pub fn set_times(fd: RawFd, nanos: i64) -> io::Result<()> {
    let times = timespecs(nanos);
    // SAFETY: times points at two timespecs.
    check(unsafe { libc::futimens(fd, times.as_ptr()) }).map(drop)
}

/// Sets the permission bits of an open file (`fchmod`).
pub fn set_mode(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain system call on a descriptor.
    check(unsafe { libc::fchmod(fd, mode as libc::mode_t) }).map(drop)
}

/// Sets one extended attribute of an open file (`fsetxattr`).
pub fn set_xattr(fd: RawFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let key = cstr(key)?;
    // SAFETY: key is NUL-terminated, value is valid for its length.
    check(unsafe { libc::fsetxattr(fd, key.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

fn timespecs(nanos: i64) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: nanos.div_euclid(1_000_000_000),
        tv_nsec: nanos.rem_euclid(1_000_000_000),
    };
    [ts, ts]
}

/// Reads a value of unknown size with a call that, given a null buffer,
/// tells the size needed, and fails with `ERANGE` when the buffer is too
/// small (the value grew in between): the list and get calls of extended
/// attributes.
fn read_sized(mut call: impl FnMut(*mut u8, usize) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut size = retry(|| call(std::ptr::null_mut(), 0))?;
    loop {
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match retry(|| call(buf.as_mut_ptr(), buf.len())) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                size = retry(|| call(std::ptr::null_mut(), 0))?.max(size * 2);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Raises this process's soft limit of open files to its hard limit, once,
/// as the Go runtime does for buildctl: a walk holds one descriptor per
/// level of the tree.
pub fn raise_open_files_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: an all-zero rlimit is a valid value to be overwritten.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: lim is a valid rlimit buffer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0
            && lim.rlim_cur < lim.rlim_max
        {
            lim.rlim_cur = lim.rlim_max;
            // SAFETY: lim holds limits read from the kernel.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        }
    });
}

const OPENAT2_UNKNOWN: u8 = 0;
const OPENAT2_YES: u8 = 1;
const OPENAT2_NO: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);

const XATTRAT_UNKNOWN: u8 = 0;
const XATTRAT_YES: u8 = 1;
const XATTRAT_NO: u8 = 2;
static XATTRAT: AtomicU8 = AtomicU8::new(XATTRAT_UNKNOWN);

// The `*xattrat` system calls of Linux 6.13 have the same numbers on every
// architecture; libc does not name them yet.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// `struct open_how` of `openat2` (libc's cannot be built outside it).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct xattr_args` of the `*xattrat` calls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Whether an error means the call itself is unavailable (an old kernel, or
/// a seccomp profile that refuses it).
fn unavailable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM))
}

/// [`unavailable`] for the `*xattrat` calls, where EPERM is also a real
/// answer (a `trusted.` attribute without the privilege): it counts only
/// before any call has worked.
fn xattrat_unavailable(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSYS)
        || (e.raw_os_error() == Some(libc::EPERM)
            && XATTRAT.load(Ordering::Relaxed) == XATTRAT_UNKNOWN)
}

impl Dir {
    /// Opens a directory by path, following symlinks: for the paths the user
    /// names (the context, the output's parent).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = cstr(path.as_os_str().as_bytes())?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: c is NUL-terminated.
        let fd = retry(|| check(unsafe { libc::open(c.as_ptr(), flags) }))?;
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Another descriptor of the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
        })
    }

    /// `fstat` of this directory.
    pub fn stat(&self) -> io::Result<Stat> {
        fstat(self.fd())
    }

    /// `fstatat` of an entry, not following a symlink.
    pub fn stat_at(&self, name: &[u8]) -> io::Result<Stat> {
        let c = cstr(name)?;
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: Stat = unsafe { std::mem::zeroed() };
        // SAFETY: c is NUL-terminated and st a valid stat buffer.
        retry(|| {
            check(unsafe {
                libc::fstatat(self.fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW)
            })
        })?;
        Ok(st)
    }

    /// Opens an entry with `openat`, never following a symlink in its
    /// place (`O_NOFOLLOW` is always added).
    pub fn open_at(&self, name: &[u8], flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        let c = cstr(name)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: c is NUL-terminated.
        let fd = retry(|| {
            check(unsafe { libc::openat(self.fd(), c.as_ptr(), flags, mode as libc::c_uint) })
        })?;
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Opens a subdirectory; a symlink in its place is refused.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<Dir> {
        let fd = self.open_at(name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(Dir { fd })
    }

    /// Opens `rel` (a `/`-separated relative path) below this directory
    /// without following any symlink on the way and without leaving it.
    pub fn open_beneath(&self, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        if OPENAT2.load(Ordering::Relaxed) != OPENAT2_NO {
            match self.openat2_beneath(rel, flags) {
                Err(e) if unavailable(&e) || e.raw_os_error() == Some(libc::EINVAL) => {
                    if OPENAT2.load(Ordering::Relaxed) == OPENAT2_UNKNOWN {
                        tracing::debug!(error = %e, "openat2 unavailable; opening one component at a time");
                        OPENAT2.store(OPENAT2_NO, Ordering::Relaxed);
                    } else {
                        return Err(e);
                    }
                }
                r => {
                    OPENAT2.store(OPENAT2_YES, Ordering::Relaxed);
                    return r;
                }
            }
        }
        self.open_beneath_by_components(rel, flags)
    }

    /// [`Self::open_beneath`] as a directory.
    pub fn open_dir_beneath(&self, rel: &[u8]) -> io::Result<Dir> {
        let fd = self.open_beneath(rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(Dir { fd })
    }

    fn openat2_beneath(&self, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        let c = cstr(rel)?;
        let how = OpenHow {
            flags: (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS,
        };
        let mut attempts = 0;
        loop {
            // SAFETY: c is NUL-terminated and how a valid open_how of the
            // size passed.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            match check_long(rc) {
                // A rename elsewhere during the lookup: the kernel asks to
                // try again.
                Err(e)
                    if (e.raw_os_error() == Some(libc::EAGAIN) && attempts < 16)
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(e),
                // SAFETY: the call returned a new descriptor.
                Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            }
        }
    }

    fn open_beneath_by_components(&self, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        let mut parts = rel.split(|b| *b == b'/').peekable();
        let mut current: Option<Dir> = None;
        while let Some(part) = parts.next() {
            if !is_plain_name(part) {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
            let at = current.as_ref().unwrap_or(self);
            if parts.peek().is_none() {
                return at.open_at(part, flags, 0);
            }
            let fd = at.open_at(part, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            current = Some(Dir { fd });
        }
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// The names in this directory, `.` and `..` left out, in the order the
    /// file system gives them.
    pub fn read_names(&self) -> io::Result<Vec<Vec<u8>>> {
        // getdents64 reads from the descriptor's offset: a private
        // descriptor keeps this one's untouched.
        let own = self.open_at(b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut names = Vec::new();
        let mut buf = vec![0u8; 32 << 10];
        loop {
            // SAFETY: buf is writable for its length.
            let n = retry(|| {
                check_long(unsafe {
                    libc::syscall(
                        libc::SYS_getdents64,
                        own.as_raw_fd(),
                        buf.as_mut_ptr(),
                        buf.len(),
                    )
                })
            })? as usize;
            if n == 0 {
                return Ok(names);
            }
            let mut off = 0;
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type,
            // then the NUL-terminated name.
            while off + 19 <= n {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                if reclen == 0 || off + reclen > n {
                    break;
                }
                let raw = &buf[off + 19..off + reclen];
                let name = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
                if name != b"." && name != b".." {
                    names.push(name.to_vec());
                }
                off += reclen;
            }
        }
    }

    /// The target of a symlink.
    pub fn read_link_at(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        let c = cstr(name)?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: c is NUL-terminated and buf writable for its length.
            let n = unsafe {
                libc::readlinkat(self.fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < buf.len() {
                buf.truncate(n);
                return Ok(buf);
            }
            buf.resize(buf.len() * 2, 0);
        }
    }

    /// The `/proc/self/fd` path of an entry: the fallback for the
    /// extended-attribute calls on kernels without the `*xattrat` calls.
    fn proc_path(&self, name: &[u8]) -> io::Result<CString> {
        let mut p = format!("/proc/self/fd/{}/", self.fd()).into_bytes();
        p.extend_from_slice(name);
        cstr(&p)
    }

    /// The extended attributes of an entry (not following a symlink), in
    /// the order the file system lists them. A file system without them
    /// gives none.
    pub fn xattrs_at(&self, name: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let keys = match self.list_xattrs_at(name) {
            Ok(k) => k,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA)) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for key in keys.split(|b| *b == 0).filter(|k| !k.is_empty()) {
            // An attribute removed between the two calls is left out.
            if let Ok(value) = self.get_xattr_at(name, key) {
                out.push((key.to_vec(), value));
            }
        }
        Ok(out)
    }

    fn list_xattrs_at(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        let c = cstr(name)?;
        read_sized(|ptr, len| {
            if XATTRAT.load(Ordering::Relaxed) != XATTRAT_NO {
                // SAFETY: c is NUL-terminated, ptr valid for len bytes (or
                // null with len 0).
                let rc = unsafe {
                    libc::syscall(
                        SYS_LISTXATTRAT,
                        self.fd(),
                        c.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                        ptr,
                        len,
                    )
                };
                match check_long(rc) {
                    Err(e) if xattrat_unavailable(&e) => {
                        XATTRAT.store(XATTRAT_NO, Ordering::Relaxed)
                    }
                    r => {
                        XATTRAT.store(XATTRAT_YES, Ordering::Relaxed);
                        return r.map(|n| n as usize);
                    }
                }
            }
            let p = self.proc_path(name)?;
            // SAFETY: p is NUL-terminated, ptr valid for len bytes.
            let rc = unsafe { libc::llistxattr(p.as_ptr(), ptr.cast(), len) };
            check_long(rc as libc::c_long).map(|n| n as usize)
        })
    }

    fn get_xattr_at(&self, name: &[u8], key: &[u8]) -> io::Result<Vec<u8>> {
        let c = cstr(name)?;
        let k = cstr(key)?;
        read_sized(|ptr, len| {
            if XATTRAT.load(Ordering::Relaxed) != XATTRAT_NO {
                let mut args = XattrArgs {
                    value: ptr as u64,
                    size: u32::try_from(len).unwrap_or(u32::MAX),
                    flags: 0,
                };
                // SAFETY: c and k are NUL-terminated, args points at a
                // buffer valid for `size` bytes (or null with 0).
                let rc = unsafe {
                    libc::syscall(
                        SYS_GETXATTRAT,
                        self.fd(),
                        c.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                        k.as_ptr(),
                        &mut args as *mut XattrArgs,
                        std::mem::size_of::<XattrArgs>(),
                    )
                };
                match check_long(rc) {
                    Err(e) if xattrat_unavailable(&e) => {
                        XATTRAT.store(XATTRAT_NO, Ordering::Relaxed)
                    }
                    r => return r.map(|n| n as usize),
                }
            }
            let p = self.proc_path(name)?;
            // SAFETY: p and k are NUL-terminated, ptr valid for len.
            let rc = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), ptr.cast(), len) };
            check_long(rc as libc::c_long).map(|n| n as usize)
        })
    }

    /// Sets an extended attribute of an entry without following a symlink
    /// and without opening it (a device node must not be opened).
    pub fn set_xattr_at(&self, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
        let c = cstr(name)?;
        let k = cstr(key)?;
        if XATTRAT.load(Ordering::Relaxed) != XATTRAT_NO {
            let args = XattrArgs {
                value: value.as_ptr() as u64,
                size: value.len() as u32,
                flags: 0,
            };
            // SAFETY: c and k are NUL-terminated, args points at `value`.
            let rc = unsafe {
                libc::syscall(
                    SYS_SETXATTRAT,
                    self.fd(),
                    c.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                    k.as_ptr(),
                    &args as *const XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            };
            match check_long(rc) {
                Err(e) if xattrat_unavailable(&e) => XATTRAT.store(XATTRAT_NO, Ordering::Relaxed),
                r => {
                    XATTRAT.store(XATTRAT_YES, Ordering::Relaxed);
                    return r.map(drop);
                }
            }
        }
        let p = self.proc_path(name)?;
        // SAFETY: p and k are NUL-terminated, value valid for its length.
        check(unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
        .map(drop)
    }

    pub fn mkdir_at(&self, name: &[u8], mode: u32) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: c is NUL-terminated.
        check(unsafe { libc::mkdirat(self.fd(), c.as_ptr(), mode as libc::mode_t) }).map(drop)
    }

    pub fn symlink_at(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        let t = cstr(target)?;
        let c = cstr(name)?;
        // SAFETY: both are NUL-terminated.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.fd(), c.as_ptr()) }).map(drop)
    }

    /// `mknodat`: `mode` holds the file type and permission bits.
    pub fn mknod_at(&self, name: &[u8], mode: u32, dev: libc::dev_t) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: c is NUL-terminated.
        check(unsafe { libc::mknodat(self.fd(), c.as_ptr(), mode as libc::mode_t, dev) }).map(drop)
    }

    /// A hard link `name` here to `from_name` in `from` (a symlink there is
    /// linked itself, never followed).
    pub fn link_at(&self, from: &Dir, from_name: &[u8], name: &[u8]) -> io::Result<()> {
        let f = cstr(from_name)?;
        let c = cstr(name)?;
        // SAFETY: both are NUL-terminated.
        check(unsafe { libc::linkat(from.fd(), f.as_ptr(), self.fd(), c.as_ptr(), 0) }).map(drop)
    }

    /// Permission bits of an entry this process just created in a
    /// directory nobody else can write: used for FIFOs and device nodes,
    /// which cannot be opened for `fchmod` without side effects.
    pub fn chmod_at(&self, name: &[u8], mode: u32) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: c is NUL-terminated.
        check(unsafe { libc::fchmodat(self.fd(), c.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
    }

    /// Both times of an entry, not following a symlink.
    pub fn set_times_at(&self, name: &[u8], nanos: i64) -> io::Result<()> {
        let c = cstr(name)?;
        let times = timespecs(nanos);
        // SAFETY: c is NUL-terminated and times points at two timespecs.
        check(unsafe {
            libc::utimensat(
                self.fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
    }

    /// Removes an entry that is not a directory, or an empty directory.
    pub fn unlink_at(&self, name: &[u8], dir: bool) -> io::Result<()> {
        let c = cstr(name)?;
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: c is NUL-terminated.
        check(unsafe { libc::unlinkat(self.fd(), c.as_ptr(), flags) }).map(drop)
    }

    /// `renameat2` of `name` here to `to_name` in `to` with `flags`
    /// (`RENAME_NOREPLACE`, `RENAME_EXCHANGE` or 0).
    pub fn rename_at(&self, name: &[u8], to: &Dir, to_name: &[u8], flags: u32) -> io::Result<()> {
        let c = cstr(name)?;
        let t = cstr(to_name)?;
        if flags == 0 {
            // SAFETY: both are NUL-terminated.
            return check(unsafe { libc::renameat(self.fd(), c.as_ptr(), to.fd(), t.as_ptr()) })
                .map(drop);
        }
        // SAFETY: both are NUL-terminated.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                self.fd(),
                c.as_ptr(),
                to.fd(),
                t.as_ptr(),
                flags as libc::c_uint,
            )
        })
        .map(drop)
    }

    /// Removes an entry and, if it is a directory, everything below it,
    /// through descriptors only: a symlink is removed, never followed. An
    /// entry already gone is no error. No recursion; one descriptor is held
    /// per level (the trees bkd removes are below `PATH_MAX` deep).
    pub fn remove_tree_at(&self, name: &[u8]) -> io::Result<()> {
        match self.unlink_at(name, false) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
            // EPERM: some file systems answer unlink of a directory so.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
        let top = match self.open_dir(name) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // Each level: the directory, the name it has in its parent, and
        // what is left to remove in it.
        let mut stack: Vec<(Dir, Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
        // A directory of ours without write permission (a read-only tree
        // that was received) cannot be emptied until it has it again.
        let _ = set_mode(top.fd(), 0o700);
        let names = top.read_names()?;
        stack.push((top, name.to_vec(), names));
        while let Some((dir, _, names)) = stack.last_mut() {
            let Some(child) = names.pop() else {
                if let Some((dir, own_name, _)) = stack.pop() {
                    drop(dir);
                    let parent = stack.last().map(|(d, _, _)| d).unwrap_or(self);
                    match parent.unlink_at(&own_name, true) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                continue;
            };
            match dir.unlink_at(&child, false) {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {}
                Err(e) => return Err(e),
            }
            let sub = match dir.open_dir(&child) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let _ = set_mode(sub.fd(), 0o700);
            let names = sub.read_names()?;
            stack.push((sub, child, names));
        }
        Ok(())
    }
}

impl AsRawFd for Dir {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_beneath_refuses_links_and_escapes_both_ways() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("a/b")).expect("mkdir");
        std::fs::write(d.path().join("a/b/f"), "x").expect("write");
        std::os::unix::fs::symlink("a", d.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink("f", d.path().join("a/b/flink")).expect("symlink");
        let root = Dir::open(d.path()).expect("open");
        for by_hand in [false, true] {
            let open = |rel: &[u8]| {
                if by_hand {
                    root.open_beneath_by_components(rel, libc::O_RDONLY)
                } else {
                    root.open_beneath(rel, libc::O_RDONLY)
                }
            };
            assert!(open(b"a/b/f").is_ok());
            for bad in [
                &b"link/b/f"[..],
                b"a/b/flink",
                b"../x",
                b"a/../../x",
                b"/etc/passwd",
            ] {
                assert!(
                    open(bad).is_err(),
                    "{} opened",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn names_and_xattrs_are_read_relative_to_the_directory() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().expect("tempdir");
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
        std::fs::write(d.path().join(odd), "x").expect("write");
        std::fs::write(d.path().join("b"), "x").expect("write");
        let root = Dir::open(d.path()).expect("open");
        let mut names = root.read_names().expect("names");
        names.sort();
        assert_eq!(names, [b"b".to_vec(), b"caf\xe9".to_vec()]);
        // tmpfs and ext4 both take user attributes.
        let f = root.open_at(b"b", libc::O_RDONLY, 0).expect("open");
        if set_xattr(f.as_raw_fd(), b"user.k", b"v1").is_ok() {
            root.set_xattr_at(b"caf\xe9", b"user.k2", b"v2")
                .expect("set at");
            assert_eq!(
                root.xattrs_at(b"b").expect("xattrs"),
                [(b"user.k".to_vec(), b"v1".to_vec())]
            );
            assert_eq!(
                root.xattrs_at(b"caf\xe9").expect("xattrs"),
                [(b"user.k2".to_vec(), b"v2".to_vec())]
            );
        }
    }

    #[test]
    fn remove_tree_takes_deep_read_only_trees_and_leaves_link_targets() {
        let d = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("keep"), "x").expect("write");
        let root = Dir::open(d.path()).expect("open");
        root.mkdir_at(b"t", 0o700).expect("mkdir");
        let mut cur = root.open_dir(b"t").expect("open");
        for _ in 0..3000 {
            cur.mkdir_at(b"a", 0o700).expect("mkdir");
            let next = cur.open_dir(b"a").expect("open");
            set_mode(cur.fd(), 0o500).expect("chmod");
            cur = next;
        }
        cur.symlink_at(outside.path().as_os_str().as_bytes(), b"link")
            .expect("symlink");
        drop(cur);
        root.remove_tree_at(b"t").expect("remove");
        assert!(root.read_names().expect("names").is_empty());
        assert!(outside.path().join("keep").exists());
    }
}
