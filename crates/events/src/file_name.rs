//! Schema file names. Shared with `build.rs` (through `#[path]`), which cannot use the crate it
//! builds, so this module depends on nothing.

/// Splits `OrderPlaced.v2.avsc` into `("OrderPlaced", 2)`.
///
/// The name must be CamelCase ASCII letters and digits; the version a positive integer with no
/// leading zero.
pub fn parse_file_name(file: &str) -> Option<(&str, u32)> {
    let stem = file.strip_suffix(".avsc")?;
    let (name, version) = stem.rsplit_once(".v")?;
    let valid_name = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric());
    let version: u32 = version
        .parse()
        .ok()
        .filter(|v| *v >= 1 && !version.starts_with('0'))?;
    valid_name.then_some((name, version))
}
