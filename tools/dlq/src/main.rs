//! `spine-dlq`: not built yet.
fn main() {}
