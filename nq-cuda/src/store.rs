//! Device-resident storage of the compressed cache (in progress).
