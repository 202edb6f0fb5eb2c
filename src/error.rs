//! The crate error and the exit-code table. Every failure a user can meet
//! maps to one line of text and one exit code, decided here only.

/// Exit codes, documented in README.md.
pub mod exit {
    /// The build ran and failed (a step failed, the Dockerfile is invalid,
    /// a push was refused).
    pub const BUILD_FAILED: i32 = 1;
    /// The command line is malformed (unknown flag, bad --output syntax).
    pub const USAGE: i32 = 2;
    /// An input named on the command line is missing or unusable (context
    /// directory, Dockerfile, TLS files, Docker config).
    pub const INPUT: i32 = 3;
    /// buildkitd could not be reached or stopped answering.
    pub const DAEMON: i32 = 4;
    /// The output could not be written (disk full, closed stdout).
    pub const OUTPUT: i32 = 5;
    /// Interrupted by SIGINT.
    pub const INTERRUPTED: i32 = 130;
    /// Terminated by SIGTERM.
    pub const TERMINATED: i32 = 143;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error("{0}")]
    Daemon(String),
    #[error("{message}")]
    BuildFailed {
        message: String,
        /// The tail of the build's step logs, for recognising known
        /// failures; never printed as part of the error.
        step_logs: String,
    },
    #[error(transparent)]
    DaemonStart(#[from] crate::daemon::StartFailure),
    #[error("interrupted by {}", signal_name(*.0))]
    Interrupted(i32),
    #[error(transparent)]
    Output(#[from] crate::session::filesend::CommitError),
    #[error("{0}")]
    OutputWrite(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Input(_) => exit::INPUT,
            Error::Transport(crate::transport::TransportError::Connect { .. }) => exit::DAEMON,
            Error::Transport(_) => exit::INPUT,
            Error::Session(_) | Error::Daemon(_) | Error::DaemonStart(_) => exit::DAEMON,
            Error::BuildFailed { .. } => exit::BUILD_FAILED,
            Error::Interrupted(libc::SIGINT) => exit::INTERRUPTED,
            Error::Interrupted(_) => exit::TERMINATED,
            Error::Output(_) | Error::OutputWrite(_) => exit::OUTPUT,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources on one line, each source once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = c.source();
    }
    text
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// A short reason for an I/O error, without the OS error number.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
