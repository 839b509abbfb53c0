//! The email service (being built).
