//! One module per op.
pub(crate) mod rope;
