//! zeo-client: the Rust client library (issue 4). Empty until then.
