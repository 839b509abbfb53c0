//! The schema gate against the real schemas, the broken fixture and hand-made mistakes.

use spine_events::SchemaError;
use spine_events::compat::{Violation, check_catalog, check_dir, check_files};

use crate::support::workspace_path;

#[test]
fn every_version_of_every_event_is_compatible_both_ways() {
    let report = check_catalog();

    let failures: Vec<String> = report.violations().map(ToString::to_string).collect();
    assert!(report.is_ok(), "{failures:#?}");
    let checks: Vec<String> = report.checks().iter().map(|c| c.what.clone()).collect();
    assert!(
        checks.contains(&"OrderPlaced v1 -> v2 (v2 reads v1 data)".to_owned()),
        "{checks:#?}"
    );
    assert!(
        checks.contains(&"OrderPlaced v2 -> v1 (v1 reads v2 data)".to_owned()),
        "{checks:#?}"
    );
}

#[test]
fn the_schemas_directory_passes_the_gate() {
    let report = check_dir(workspace_path("schemas")).expect("schemas/ is readable");

    assert!(
        report.is_ok(),
        "{:#?}",
        report.violations().collect::<Vec<_>>()
    );
    assert_eq!(report, check_catalog(), "the build embeds what is on disk");
}

#[test]
fn the_gate_catches_a_removed_required_field() {
    let report = check_dir(workspace_path("crates/events/tests/fixtures/broken")).unwrap();

    let cannot_read: Vec<(u32, u32, &str)> = report
        .violations()
        .filter_map(|v| match v {
            Violation::CannotRead {
                event,
                writer,
                reader,
                reason,
            } if event == "OrderPlaced" => Some((*writer, *reader, reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(cannot_read.len(), 2, "{cannot_read:#?}");
    for (writer, reader, reason) in cannot_read {
        assert_eq!(writer, 3, "only v3 data is unreadable");
        assert!([1, 2].contains(&reader));
        assert!(
            reason.contains("Field 'currency' in reader schema must have a default value"),
            "{reason}"
        );
    }
}

#[test]
fn the_gate_catches_a_command_name() {
    let report = check_dir(workspace_path("crates/events/tests/fixtures/broken")).unwrap();

    let not_a_fact: Vec<&str> = report
        .violations()
        .filter_map(|v| match v {
            Violation::NotAFact { event, .. } => Some(event.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(not_a_fact, ["CreateInvoice"]);
}

#[test]
fn the_gate_catches_gaps_renames_duplicates_and_bad_files() {
    let v1 = std::fs::read_to_string(workspace_path("schemas/OrderPlaced.v1.avsc")).unwrap();
    let v2 = std::fs::read_to_string(workspace_path("schemas/OrderPlaced.v2.avsc")).unwrap();
    let moved = v2.replace("spine.orders", "spine.shop");
    let docs_only = v1.replace("A customer placed an order.", "Only the docs changed.");
    let files = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(f, j)| (f.to_string(), j.to_string()))
            .collect::<Vec<_>>()
    };

    let gap = check_files(files(&[
        ("OrderPlaced.v1.avsc", &v1),
        ("OrderPlaced.v3.avsc", &v2),
    ]));
    let renamed = check_files(files(&[
        ("OrderPlaced.v1.avsc", &v1),
        ("OrderPlaced.v2.avsc", &moved),
    ]));
    let duplicate = check_files(files(&[
        ("OrderPlaced.v1.avsc", &v1),
        ("OrderPlaced.v2.avsc", &docs_only),
    ]));
    let bad = check_files(files(&[
        ("OrderPlaced.avsc", &v1),
        ("OrderShipped.v1.avsc", "{"),
    ]));

    assert!(
        gap.violations()
            .any(|v| matches!(v, Violation::VersionGap { versions, .. } if versions == &[1, 3]))
    );
    assert!(renamed.violations().any(|v| matches!(
        v,
        Violation::FullNameChanged { version: 2, found, .. } if found == "spine.shop.OrderPlaced"
    )));
    assert!(duplicate.violations().any(|v| matches!(
        v,
        Violation::SameCanonicalForm {
            first: 1,
            second: 2,
            ..
        }
    )));
    let bad: Vec<_> = bad.violations().collect();
    assert!(
        matches!(
            bad[0],
            Violation::BadFile {
                error: SchemaError::FileName { .. },
                ..
            }
        ),
        "{bad:?}"
    );
    assert!(
        matches!(
            bad[1],
            Violation::BadFile {
                error: SchemaError::Parse { .. },
                ..
            }
        ),
        "{bad:?}"
    );
}
