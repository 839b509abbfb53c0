//! Embeds every `schemas/*.avsc` file into the crate at compile time.
//!
//! The catalog must never drift from the files on disk, so nobody keeps a list by hand: this
//! script writes `embedded.rs` into `OUT_DIR` with one `(file, name, version, include_str!(..))`
//! entry per schema file, and tells cargo to rerun when the directory or any file changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

#[path = "src/file_name.rs"]
mod file_name;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let schemas_dir = manifest_dir.join("../../schemas");
    let schemas_dir = schemas_dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("schema directory {} is missing: {e}", schemas_dir.display()));
    // Watching the directory catches added and removed files; each file is watched for edits.
    println!("cargo:rerun-if-changed={}", schemas_dir.display());

    let mut files: Vec<PathBuf> = fs::read_dir(&schemas_dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", schemas_dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "avsc"))
        .collect();
    files.sort();

    let mut out = String::from(
        "/// Every schema file under `schemas/`, embedded by build.rs: (file, event name, version, JSON).\n\
         pub(crate) static EMBEDDED: &[(&str, &str, u32, &str)] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .expect("UTF-8 file name");
        let (name, version) = file_name::parse_file_name(file).unwrap_or_else(|| {
            panic!(
                "{}: schema files must be named <EventName>.v<N>.avsc, e.g. OrderPlaced.v1.avsc",
                path.display()
            )
        });
        let absolute = path.to_str().expect("UTF-8 path");
        writeln!(
            out,
            "    ({file:?}, {name:?}, {version}, include_str!({absolute:?})),"
        )
        .unwrap();
    }
    out.push_str("];\n");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    write_if_changed(&out_dir.join("embedded.rs"), &out);
}

fn write_if_changed(path: &Path, contents: &str) {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return;
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
