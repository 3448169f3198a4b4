//! Fused decode attention over the compressed storage (in progress).
