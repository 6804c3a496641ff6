//! Placeholder: filled in by the protocol work.
