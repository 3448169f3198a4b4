//! Integration tests for nq_entropy: one binary (see STYLE.md), modules by concern.

#[path = "support/e8.rs"]
mod e8;
#[path = "support/mutate.rs"]
mod mutate;

mod corrupt;
mod errors;
mod oracle;
mod prop;
