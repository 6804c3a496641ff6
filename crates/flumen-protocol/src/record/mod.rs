//! Placeholder: filled in by the record-layer work.
