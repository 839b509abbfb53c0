//! `email`: not built yet.
fn main() {}
