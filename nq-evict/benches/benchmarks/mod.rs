pub(crate) mod data;
pub(crate) mod score;
pub(crate) mod select;
