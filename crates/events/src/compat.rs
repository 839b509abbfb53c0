//! The schema gate: checks a directory of `.avsc` files (or the embedded catalog) before a
//! change can land.
//!
//! For every event it checks that
//! - each file parses into a valid event schema ([`CatalogEntry::parse`]);
//! - the name reads as a fact ([`crate::naming`]);
//! - versions are numbered 1..N with no gaps and share one full name;
//! - no two versions have the same canonical form (their fingerprints would collide);
//! - every version can read data written by every other version, both ways (full
//!   compatibility), by apache-avro's `SchemaCompatibility::can_read`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

use crate::catalog::{CatalogEntry, embedded_files};
use crate::error::SchemaError;
use crate::naming::check_event_name;

/// Why the gate could not even look at the schemas.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct CheckError {
    /// The directory or file that could not be read.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// A broken rule, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A file is misnamed or does not hold a valid event schema.
    BadFile {
        /// The file name.
        file: String,
        /// What is wrong with it.
        error: SchemaError,
    },
    /// The event name reads as a command, not a fact.
    NotAFact {
        /// The event.
        event: String,
        /// Why it doesn't read as a fact.
        reason: String,
    },
    /// Versions are not 1..N.
    VersionGap {
        /// The event.
        event: String,
        /// The versions found, ascending.
        versions: Vec<u32>,
    },
    /// A version's record has a different full name than version 1's.
    FullNameChanged {
        /// The event.
        event: String,
        /// The version that differs.
        version: u32,
        /// The lowest version's full name.
        expected: String,
        /// This version's full name.
        found: String,
    },
    /// Two versions have the same canonical form, so their fingerprints collide.
    SameCanonicalForm {
        /// The event.
        event: String,
        /// The older version.
        first: u32,
        /// The newer version.
        second: u32,
    },
    /// A reader version cannot read data written by a writer version.
    CannotRead {
        /// The event.
        event: String,
        /// The version that wrote the data.
        writer: u32,
        /// The version that fails to read it.
        reader: u32,
        /// apache-avro's reason.
        reason: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadFile { file, error } => write!(f, "{file}: {error}"),
            Self::NotAFact { event, reason } => write!(f, "{event}: {reason}"),
            Self::VersionGap { event, versions } => {
                let found: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
                write!(
                    f,
                    "{event}: versions must be v1..vN with no gaps, found {}",
                    found.join(", ")
                )
            }
            Self::FullNameChanged {
                event,
                version,
                expected,
                found,
            } => write!(
                f,
                "{event}: v{version} is named {found} but earlier versions are {expected}; \
                 every version must keep one full name"
            ),
            Self::SameCanonicalForm {
                event,
                first,
                second,
            } => write!(
                f,
                "{event}: v{first} and v{second} have the same canonical form, so readers cannot \
                 tell them apart; a new version must change what is written, not just docs"
            ),
            Self::CannotRead {
                event,
                writer,
                reader,
                reason,
            } => {
                write!(
                    f,
                    "{event}: a v{reader} reader cannot read v{writer} data: {reason}"
                )
            }
        }
    }
}

/// One check the gate ran: what it checked and, if it failed, the violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. `OrderPlaced v1 -> v2 (v2 reads v1 data)`.
    pub what: String,
    /// `None` if the check passed.
    pub violation: Option<Violation>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.violation.is_none() {
            "ok  "
        } else {
            "FAIL"
        };
        write!(f, "{status} {}", self.what)
    }
}

/// Every check the gate ran, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    checks: Vec<Check>,
}

impl Report {
    /// Every check, passed or not.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The failed checks' violations.
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.checks.iter().filter_map(|c| c.violation.as_ref())
    }

    /// True if no check failed.
    pub fn is_ok(&self) -> bool {
        self.violations().next().is_none()
    }

    fn record(&mut self, what: String, violation: Option<Violation>) {
        self.checks.push(Check { what, violation });
    }
}

/// Checks every `*.avsc` file in `dir` (other files, such as a README, are ignored).
pub fn check_dir(dir: impl AsRef<Path>) -> Result<Report, CheckError> {
    let dir = dir.as_ref();
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckError { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().is_some_and(|ext| ext == "avsc") {
            let json = std::fs::read_to_string(&path).map_err(io_error(&path))?;
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            files.push((file, json));
        }
    }
    Ok(check_files(files))
}

/// Checks the schemas embedded in this build (the `schemas/` directory it was built from).
pub fn check_catalog() -> Report {
    check_files(embedded_files().map(|(file, json)| (file.to_owned(), json.to_owned())))
}

/// Checks schema files given as `(file name, JSON)` pairs.
pub fn check_files(files: impl IntoIterator<Item = (String, String)>) -> Report {
    let mut files: Vec<(String, String)> = files.into_iter().collect();
    files.sort();
    let mut report = Report::default();
    let mut events: BTreeMap<String, Vec<CatalogEntry>> = BTreeMap::new();
    for (file, json) in files {
        match CatalogEntry::parse(&file, &json) {
            Ok(entry) => {
                let what = format!(
                    "{file} is {} v{} on {}, fingerprint {:#018x}",
                    entry.full_name(),
                    entry.version(),
                    entry.topic(),
                    entry.fingerprint()
                );
                report.record(what, None);
                events
                    .entry(entry.name().to_owned())
                    .or_default()
                    .push(entry);
            }
            Err(error) => {
                let what = format!("{file} is a valid event schema");
                report.record(what, Some(Violation::BadFile { file, error }));
            }
        }
    }
    for (event, mut versions) in events {
        versions.sort_by_key(CatalogEntry::version);
        check_event(&mut report, &event, &versions);
    }
    report
}

fn check_event(report: &mut Report, event: &str, versions: &[CatalogEntry]) {
    let violation = check_event_name(event)
        .err()
        .map(|reason| Violation::NotAFact {
            event: event.to_owned(),
            reason,
        });
    report.record(format!("{event} reads as a fact"), violation);

    let numbers: Vec<u32> = versions.iter().map(CatalogEntry::version).collect();
    let gapless = numbers
        .iter()
        .zip(1..)
        .all(|(&version, expected)| version == expected);
    let violation = (!gapless).then(|| Violation::VersionGap {
        event: event.to_owned(),
        versions: numbers.clone(),
    });
    report.record(
        format!("{event} versions are v1..v{}", numbers.len()),
        violation,
    );

    let expected = versions[0].full_name();
    let violation = versions
        .iter()
        .find(|v| v.full_name() != expected)
        .map(|v| Violation::FullNameChanged {
            event: event.to_owned(),
            version: v.version(),
            expected: expected.to_owned(),
            found: v.full_name().to_owned(),
        });
    report.record(
        format!("{event} keeps one full name, {expected}"),
        violation,
    );

    for (i, older) in versions.iter().enumerate() {
        for newer in &versions[i + 1..] {
            if older.fingerprint() == newer.fingerprint() {
                let what = format!(
                    "{event} v{} and v{} differ",
                    older.version(),
                    newer.version()
                );
                let violation = Violation::SameCanonicalForm {
                    event: event.to_owned(),
                    first: older.version(),
                    second: newer.version(),
                };
                report.record(what, Some(violation));
            }
        }
    }

    for writer in versions {
        for reader in versions.iter().filter(|r| r.version() != writer.version()) {
            let (w, r) = (writer.version(), reader.version());
            let what = format!("{event} v{w} -> v{r} (v{r} reads v{w} data)");
            let reason = match SchemaCompatibility::can_read(writer.schema(), reader.schema()) {
                Ok(Compatibility::Full) => None,
                Ok(Compatibility::Partial) => Some(
                    "only partially compatible: some values (enum symbols or union branches) \
                     would fail to resolve"
                        .to_owned(),
                ),
                Err(error) => Some(error.to_string()),
            };
            let violation = reason.map(|reason| Violation::CannotRead {
                event: event.to_owned(),
                writer: w,
                reader: r,
                reason,
            });
            report.record(what, violation);
        }
    }
}
