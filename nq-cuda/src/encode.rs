//! The encode pipeline on the device (in progress).
