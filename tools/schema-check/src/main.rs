//! `schema-check [DIR]`: the schema gate.
//!
//! Checks every `.avsc` file in `DIR` (default `schemas`) with [`spine_events::compat`]: each
//! file is a valid event schema named as a fact, versions are numbered 1..N and share a name,
//! and every version reads every other version's data, both ways. Prints one line per check,
//! then each violation with its reason. Exits 0 if all pass, 1 on any violation, 2 if the
//! directory cannot be read or the arguments are wrong.

use std::process::ExitCode;

use spine_events::compat::check_dir;

const USAGE: &str = "usage: schema-check [DIR]   (DIR defaults to `schemas`)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [] => "schemas",
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [dir] if !dir.starts_with('-') => dir.as_str(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    let report = match check_dir(dir) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("schema-check: {error}");
            return ExitCode::from(2);
        }
    };
    for check in report.checks() {
        println!("{check}");
    }
    let violations: Vec<_> = report.violations().collect();
    if violations.is_empty() {
        println!("\n{} checks passed in {dir}", report.checks().len());
        return ExitCode::SUCCESS;
    }
    println!("\n{} violation(s) in {dir}:", violations.len());
    for violation in violations {
        println!("  - {violation}");
    }
    ExitCode::from(1)
}
