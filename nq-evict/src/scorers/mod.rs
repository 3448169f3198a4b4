//! The scorers: one type per method, each implementing [`Scorer`](crate::Scorer).

pub(crate) mod combine;
pub(crate) mod expected;
pub(crate) mod observed;
pub(crate) mod simple;
