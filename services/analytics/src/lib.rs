//! The analytics service (being built).
