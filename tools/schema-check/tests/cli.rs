//! Runs the built `schema-check` binary against the real schemas and the broken fixture, and
//! with `--registry` against the kit's in-process Confluent-compatible registry.

use std::path::PathBuf;
use std::process::{Command, Output};

use spine_kit::testing::registry::TestRegistry;

const PLACED_SUBJECT: &str = "orders.events-spine.orders.OrderPlaced";

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

/// `schema-check schemas --registry URL [more]` against a registry the test runs.
fn with_registry(url: &str, more: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_schema-check"))
        .arg(workspace_path("schemas"))
        .args(["--registry", url])
        .args(more)
        .output()
        .expect("schema-check runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_registry_every_schema_is_registered_under_its_subject_once() {
    let registry = TestRegistry::start().await;
    let url = registry.url();

    let (dry, text) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || with_registry(&url, &["--dry-run"])
    })
    .await
    .unwrap();
    assert_eq!(dry, Some(0), "{text}");
    assert!(
        text.contains("compatible (not registered: dry run)"),
        "{text}"
    );
    assert!(
        registry.versions(PLACED_SUBJECT).is_empty(),
        "a dry run registers nothing"
    );

    let (first, text) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || with_registry(&url, &[])
    })
    .await
    .unwrap();
    assert_eq!(first, Some(0), "{text}");
    assert!(
        text.contains(&format!("OrderPlaced.v2.avsc -> {PLACED_SUBJECT}: id")),
        "{text}"
    );
    assert_eq!(registry.versions(PLACED_SUBJECT).len(), 2, "v1 then v2");

    let (again, text) = tokio::task::spawn_blocking(move || with_registry(&url, &["--dry-run"]))
        .await
        .unwrap();
    assert_eq!(again, Some(0), "{text}");
    assert!(text.contains("already registered, id"), "{text}");
    assert_eq!(registry.versions(PLACED_SUBJECT).len(), 2, "no new version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatibility_the_registry_reports_fails_the_gate() {
    let registry = TestRegistry::start().await;
    // Somebody registered an OrderPlaced whose customer_id is an int: ours (a string) cannot
    // read its data, which the subject's BACKWARD level forbids.
    let theirs = std::fs::read_to_string(workspace_path("schemas/OrderPlaced.v1.avsc"))
        .unwrap()
        .replacen(
            "\"name\": \"customer_id\",\n      \"type\": \"string\"",
            "\"name\": \"customer_id\",\n      \"type\": \"int\"",
            1,
        );
    assert!(
        theirs.contains("\"type\": \"int\""),
        "the fixture changed a type"
    );
    registry.register(PLACED_SUBJECT, &theirs).unwrap();
    let url = registry.url();

    let (dry, text) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || with_registry(&url, &["--dry-run"])
    })
    .await
    .unwrap();
    assert_eq!(dry, Some(1), "{text}");
    assert!(text.contains("INCOMPATIBLE"), "{text}");

    let (register, text) = tokio::task::spawn_blocking(move || with_registry(&url, &[]))
        .await
        .unwrap();
    assert_eq!(register, Some(1), "{text}");
    assert_eq!(
        registry.versions(PLACED_SUBJECT).len(),
        1,
        "nothing incompatible was registered"
    );
}

#[test]
fn an_unreachable_registry_is_an_error_naming_it_not_a_pass() {
    let (code, text) = with_registry("http://127.0.0.1:9", &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("http://127.0.0.1:9"), "{text}");
}
