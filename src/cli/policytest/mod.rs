//! `safety-gate test`: runs PolicyTest suites (design.md §6) through the same
//! engine path as the webhook and prints each case like a test runner.
//!
//! [`spec`] is the document as its YAML reads, [`runner`] loads a suite and
//! evaluates its cases, [`expectations`] checks a case's `expect` against the
//! decision and says what differed; this file finds the suites and counts.

mod degraded;
mod expectations;
pub(crate) mod runner;
pub mod spec;

use super::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, stdout_is_color_terminal};
use crate::documents::{STDIN, files_in, read_text, split_documents};
use spec::PolicyTestDocument;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// PolicyTest files or directories (searched recursively); `-` reads stdin
    /// (relative paths in it are then relative to the working directory).
    #[arg(default_value = "tests/policies")]
    pub paths: Vec<PathBuf>,
}

/// Case and suite counts over every file.
#[derive(Debug, Default)]
struct Totals {
    /// PolicyTest documents found (run or not).
    suites: usize,
    passed: usize,
    failed: usize,
    /// Files that cannot be read and suites that cannot run.
    broken: usize,
}

/// Runs every PolicyTest document in `args.paths` (other YAML documents beside
/// them are skipped), printing each case and a `N passed, M failed` line.
///
/// Returns the exit code: [`EXIT_OK`] every case passed; [`EXIT_FINDINGS`] a
/// case failed; [`EXIT_USAGE`] a path does not exist, no PolicyTest was found,
/// or some file or suite could not be read or run (named on stderr).
pub fn run(args: &TestArgs) -> u8 {
    let color = stdout_is_color_terminal();
    let files = match suite_files(&args.paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let mut totals = Totals::default();
    for file in &files {
        run_file(file, color, &mut totals);
    }
    if totals.suites == 0 && totals.broken == 0 {
        eprintln!(
            "error: no PolicyTest documents found in {}",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return EXIT_USAGE;
    }
    println!();
    println!("{} passed, {} failed", totals.passed, totals.failed);
    if totals.broken > 0 {
        eprintln!("{} suite(s) could not be run", totals.broken);
        return EXIT_USAGE;
    }
    if totals.failed > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

/// The files to read: each path as given (`-` for stdin), directories searched
/// recursively.
///
/// # Errors
/// The first path that does not exist or a directory that cannot be read,
/// as `path: reason`.
fn suite_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(files_in(p).map_err(|e| format!("{}: {e}", p.display()))?);
        } else if p.exists() || p.as_os_str() == STDIN {
            files.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(files)
}

/// Runs the PolicyTest documents in one file, adding to `totals`; what cannot
/// be read or run is printed on stderr with file and line.
fn run_file(file: &Path, color: bool, totals: &mut Totals) {
    let text = match read_text(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            totals.broken += 1;
            return;
        }
    };
    for doc in split_documents(file, &text) {
        match spec::is_policy_test(&doc) {
            Ok(true) => {}
            Ok(false) => continue, // fixtures may live beside suites
            Err(e) => {
                eprintln!("error: {e}");
                totals.broken += 1;
                continue;
            }
        }
        totals.suites += 1;
        match doc.decode::<PolicyTestDocument>() {
            Err(e) => {
                eprintln!("error: {e}");
                totals.broken += 1;
            }
            Ok(suite) => match runner::run_suite(file, &suite, color) {
                Ok((p, f)) => {
                    totals.passed += p;
                    totals.failed += f;
                }
                Err(e) => {
                    eprintln!(
                        "error: {}:{}: suite {}: {e}",
                        file.display(),
                        doc.first_line,
                        suite.metadata.name
                    );
                    totals.broken += 1;
                }
            },
        }
    }
}
