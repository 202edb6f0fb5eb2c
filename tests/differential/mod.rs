//! The context harness (the progress harness is in `progress/`, a test of
//! its own). bkd against the reference, live: the `.dockerignore` matcher against the
//! reference matcher itself ([`oracle`], [`reference`]), and whole builds
//! against buildctl on the same daemon ([`run`]): hundreds of small
//! contexts ([`cases`]), each built by both tools, compared entry by entry
//! (names, types, modes, owners, sizes, times, contents, link targets,
//! xattrs, devices) and by the bytes the daemon received for each transfer.
//!
//! Adding a case: append a [`case::Case`] to one of the lists in
//! [`cases`] (or a new list called from `cases::all`), e.g.
//!
//! ```ignore
//! cases.push(
//!     Case::new("names: a name that is not UTF-8")   // unique, says what it tries
//!         .ignore(&["caf?.txt"])                      // .dockerignore lines
//!         .file(b"caf\xe9.txt", "x")                 // entries: file, file_mode, dir,
//!         .symlink("l", "caf\u{e9}.txt")              //   symlink, hardlink, fifo
//!         .absent(b"caf\xe9.txt"),                   // optional: what buildctl must do
//! );
//! ```
//!
//! A case without a Dockerfile shares a build with up to 39 others, each a
//! named context (`--build-context` / `--local` + `context:` opt) copied to
//! `/<n>/` of a scratch image; the frontend reads a named context's
//! `.dockerignore` as it reads the main context's, in both tools. Use
//! `.dockerfile(name, text)` for what needs the main context (COPY sources,
//! `Dockerfile.dockerignore`, the frontend's own checks), `.output(Local)`
//! for the local exporter, `.fails(texts)` for a build buildctl fails (bkd
//! must fail too, its `error:` line containing `texts`). Deep trees or many
//! entries: build the entry list in a loop. Where bkd and buildctl
//! disagree, buildctl is right unless the difference is shown to be a bug in
//! the reference (then the case says so).

pub mod case;
pub mod cases;
pub mod oracle;
pub mod reference;
pub mod run;
pub mod tree;
