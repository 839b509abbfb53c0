//! The embedded catalog against the files on disk.

use spine_events::catalog;

use crate::support::workspace_path;

#[test]
fn every_schema_file_on_disk_is_in_the_catalog() {
    let mut on_disk: Vec<String> = std::fs::read_dir(workspace_path("schemas"))
        .expect("schemas/ is readable")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|file| file.ends_with(".avsc"))
        .collect();
    on_disk.sort();

    let mut embedded: Vec<String> = catalog()
        .entries()
        .iter()
        .map(|e| e.file().to_owned())
        .collect();
    embedded.sort();

    assert!(!on_disk.is_empty());
    assert_eq!(embedded, on_disk);
}

#[test]
fn every_entry_sits_on_its_producers_topic() {
    for entry in catalog().entries() {
        let service = entry.full_name().split('.').nth(1).unwrap();
        assert_eq!(
            entry.topic(),
            format!("{service}.events"),
            "{}",
            entry.file()
        );
    }
    let topics: Vec<&str> = catalog().entries().iter().map(|e| e.topic()).collect();
    for topic in ["orders.events", "inventory.events", "email.events"] {
        assert!(topics.contains(&topic), "{topic}");
    }
}
