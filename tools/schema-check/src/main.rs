//! `schema-check [DIR] [--registry URL [--dry-run] …]`: the schema gate.
//!
//! Checks every `.avsc` file in `DIR` (default `schemas`) with [`spine_events::compat`]: each
//! file is a valid event schema named as a fact, versions are numbered 1..N and share a name,
//! and every version reads every other version's data, both ways. Prints one line per check,
//! then each violation with its reason.
//!
//! With `--registry URL`, it then takes every schema to a Confluent-compatible schema registry,
//! oldest version first, under its subject (`--subject-strategy`, default `topic_record`:
//! `<topic>-<record full name>`): registers it, or with `--dry-run` only asks the registry
//! whether it would accept it (`/compatibility/…`). An incompatibility the registry reports
//! is a violation. `--username` with the password in `SCHEMA_REGISTRY_PASSWORD` for basic
//! auth; `--ca-file PEM` for a private CA.
//!
//! Exits 0 if all pass, 1 on any violation, 2 if the directory cannot be read, the registry
//! cannot be reached, or the arguments are wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use spine_events::catalog::{CatalogEntry, parse_file_name};
use spine_events::compat::check_dir;
use spine_kit::schemas::{RegistryError, SchemaRegistry};
use spine_kit::settings::{RegistrySettings, SubjectNameStrategy};

const USAGE: &str = "usage: schema-check [DIR] [--registry URL [--dry-run] [--subject-strategy topic_record|topic|record] [--username USER] [--ca-file PEM]]
  DIR defaults to `schemas`; the registry password is read from SCHEMA_REGISTRY_PASSWORD";

/// The parsed command line.
struct Args {
    dir: String,
    registry: Option<RegistrySettings>,
    dry_run: bool,
}

fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let mut dir = None;
    let mut registry: Option<RegistrySettings> = None;
    let mut dry_run = false;
    let mut strategy = None;
    let mut username = None;
    let mut ca_file = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--registry" => {
                registry = Some(RegistrySettings {
                    url: Some(value("--registry")?),
                    ..RegistrySettings::default()
                });
            }
            "--dry-run" => dry_run = true,
            "--subject-strategy" => {
                strategy = Some(match value("--subject-strategy")?.as_str() {
                    "topic_record" => SubjectNameStrategy::TopicRecord,
                    "topic" => SubjectNameStrategy::Topic,
                    "record" => SubjectNameStrategy::Record,
                    other => return Err(format!("unknown subject strategy {other:?}")),
                });
            }
            "--username" => username = Some(value("--username")?),
            "--ca-file" => ca_file = Some(PathBuf::from(value("--ca-file")?)),
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            path if dir.is_none() => dir = Some(path.to_owned()),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    let registry_only = dry_run || strategy.is_some() || username.is_some() || ca_file.is_some();
    if registry_only && registry.is_none() {
        return Err(
            "--dry-run, --subject-strategy, --username and --ca-file need --registry".into(),
        );
    }
    if let Some(registry) = &mut registry {
        registry.subject_name_strategy = strategy.unwrap_or_default();
        registry.password = username.is_some().then(|| {
            std::env::var("SCHEMA_REGISTRY_PASSWORD")
                .unwrap_or_default()
                .into()
        });
        registry.username = username;
        registry.ca_file = ca_file;
    }
    Ok(Some(Args {
        dir: dir.unwrap_or_else(|| "schemas".to_owned()),
        registry,
        dry_run,
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("schema-check: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let dir = args.dir.as_str();

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
    if !violations.is_empty() {
        println!("\n{} violation(s) in {dir}:", violations.len());
        for violation in violations {
            println!("  - {violation}");
        }
        return ExitCode::from(1);
    }
    println!("\n{} checks passed in {dir}", report.checks().len());
    let Some(settings) = args.registry else {
        return ExitCode::SUCCESS;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(take_to_registry(dir, &settings, args.dry_run)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(incompatible) => {
            println!("\n{incompatible} schema(s) the registry finds incompatible");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("schema-check: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Registers (or, dry, checks) every schema file of `dir` with the registry, oldest version
/// of each event first. Returns how many the registry finds incompatible.
async fn take_to_registry(
    dir: &str,
    settings: &RegistrySettings,
    dry_run: bool,
) -> anyhow::Result<usize> {
    let registry = SchemaRegistry::from_settings(settings)?
        .ok_or_else(|| anyhow::anyhow!("--registry needs a non-empty URL"))?;
    let mut entries = Vec::new();
    for file in std::fs::read_dir(dir)? {
        let path = file?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if parse_file_name(name).is_none() {
            continue;
        }
        let json = std::fs::read_to_string(&path)?;
        entries.push(CatalogEntry::parse(name, &json)?);
    }
    entries.sort_by(|a, b| (a.name(), a.version()).cmp(&(b.name(), b.version())));
    println!(
        "\n{} schema(s) {} the registry at {}:",
        entries.len(),
        if dry_run {
            "checked against"
        } else {
            "registered with"
        },
        registry.url()
    );
    let mut incompatible = 0;
    for entry in &entries {
        let subject = registry.subject(entry);
        let line = if dry_run {
            match registry.lookup(&subject, entry.json()).await? {
                Some(found) => format!("already registered, id {}", found.id),
                None => {
                    let answer = registry.check_compatibility(&subject, entry.json()).await?;
                    if answer.is_compatible {
                        "compatible (not registered: dry run)".to_owned()
                    } else {
                        incompatible += 1;
                        format!("INCOMPATIBLE: {}", answer.messages.join("; "))
                    }
                }
            }
        } else {
            match registry.register(&subject, entry.json()).await {
                Ok(registered) => match registered.version {
                    Some(version) => format!("id {}, version {version}", registered.id),
                    None => format!("id {}", registered.id),
                },
                Err(RegistryError::Rejected {
                    code: 409 | 40901,
                    message,
                    ..
                }) => {
                    incompatible += 1;
                    format!("INCOMPATIBLE: {message}")
                }
                Err(err) => return Err(err.into()),
            }
        };
        println!("  {} -> {subject}: {line}", entry.file());
    }
    Ok(incompatible)
}
