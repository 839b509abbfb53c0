//! `inventory`: not built yet.
fn main() {}
