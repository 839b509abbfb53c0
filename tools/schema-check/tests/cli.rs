//! Runs the built `schema-check` binary against the real schemas and the broken fixture.

use std::path::PathBuf;
use std::process::{Command, Output};

fn workspace_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn schema_check(dir: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_schema-check"))
        .arg(workspace_path(dir))
        .output()
        .expect("schema-check runs")
}

#[test]
fn the_real_schemas_pass_the_gate() {
    let output = schema_check("schemas");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok   OrderPlaced v1 -> v2 (v2 reads v1 data)"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn an_incompatible_change_fails_the_gate() {
    let output = schema_check("crates/events/tests/fixtures/broken");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL OrderPlaced v3 -> v1 (v1 reads v3 data)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL CreateInvoice reads as a fact"),
        "{stdout}"
    );
}

#[test]
fn a_missing_directory_is_a_usage_error_not_a_pass() {
    let output = schema_check("no/such/dir");
    assert_eq!(output.status.code(), Some(2));
}
