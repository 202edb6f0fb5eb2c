//! `bkd completion SHELL` and `bkd man [COMMAND]`: shell completion
//! scripts and manual pages, generated from the command-line definitions
//! so they never drift from `--help`.

use std::io::Write;

use clap::CommandFactory;

use super::Cli;
use crate::error::{io_reason, Error, Result};

fn stdout_error(e: std::io::Error) -> Error {
    Error::OutputWrite(format!("cannot write to stdout: {}", io_reason(&e)))
}

/// Prints the completion script for `shell`.
pub fn completion(shell: clap_complete::Shell) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "bkd", &mut out);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

/// The manual page of bkd, or of `bkd COMMAND` (named `bkd-COMMAND`).
pub fn page(command: Option<&str>) -> Result<Vec<u8>> {
    let root = Cli::command();
    let cmd = match command {
        None => root,
        Some(name) => {
            let sub = root
                .get_subcommands()
                .find(|c| c.get_name() == name && !c.is_hide_set())
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<&str> = root
                        .get_subcommands()
                        .filter(|c| !c.is_hide_set())
                        .map(|c| c.get_name())
                        .collect();
                    Error::Usage(format!(
                        "no manual page for {:?} (commands: {})",
                        crate::text::escape_str(name),
                        known.join(", ")
                    ))
                })?;
            let full = format!("bkd-{}", sub.get_name());
            sub.name(full)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(|e| Error::OutputWrite(format!("cannot render the manual page: {e}")))?;
    Ok(out)
}

/// Prints the manual page.
pub fn man(command: Option<&str>) -> Result<()> {
    let text = page(command)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&text)
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_the_flags() {
        let top = String::from_utf8(page(None).expect("bkd(1)")).expect("utf8");
        assert!(top.contains(".TH bkd"), "{top}");
        let build = String::from_utf8(page(Some("build")).expect("bkd-build(1)")).expect("utf8");
        assert!(build.contains(".TH bkd-build"), "{build}");
        for flag in [
            "\\-\\-iidfile",
            "\\-\\-buildkite\\-metadata",
            "\\-\\-registry\\-mirror",
        ] {
            assert!(build.contains(flag), "{flag} missing");
        }
        assert!(page(Some("nope")).is_err());
    }
}
