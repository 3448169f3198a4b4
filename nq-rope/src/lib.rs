//! Rotary position embeddings: apply and invert, for every layout real checkpoints use.
//!
//! In the nexusquant pipeline keys arrive post-RoPE; this stage can remove the rotation
//! (at each kept token's original position) before the Hadamard transform, and re-apply
//! it at attention time.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
