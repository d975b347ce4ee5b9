//! Decision-table tests on whole records.
