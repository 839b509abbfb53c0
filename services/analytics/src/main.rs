//! `analytics`: not built yet.
fn main() {}
