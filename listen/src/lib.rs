//! One home for the bounds every zeo-rs listener applies before a peer is authenticated (issue 13
//! part 4): nothing a peer sends is acted on, and nothing it sends may grow without bound, until it
//! has proved who it is.
//!
//! # Layout
//! - `allow`: the allow-list (CIDR networks), checked at accept before any byte is read.
//! - `gate`: `Gate`, a listener's allow-list plus its connection cap (a permit held for the
//!   connection's life), and the place every refusal is reported.
//! - `refusals`: the refusal counter `<prefix>_listener_refused_total{listener,reason}` and the
//!   rate-limited refusal log (one line per reason per second, with the count it suppressed).
//! - `budget`: `InputBudget`, one semaphore of bytes that every pre-auth buffer draws from, so
//!   connections x frame size cannot exceed a total bound.
//! - `preauth`: a connection's pre-auth phase: the deadline from accept to authentication, the
//!   small pre-auth frame cap, its budget reservation, and their typed errors.
//! - `http`: `serve_http`, axum/hyper serving with a gate, a request head deadline, an idle
//!   timeout, a head size cap and a body size limit.
//! - `idle`: an I/O wrapper that fails a connection on which no byte moved for a while.

mod allow;
mod budget;
mod gate;
mod http;
mod idle;
mod preauth;
mod refusals;

pub use allow::AllowList;
pub use budget::{BudgetExhausted, InputBudget, Reservation};
pub use gate::{Admission, Gate};
pub use http::{HttpLimits, serve_http};
pub use idle::IdleTimeout;
pub use preauth::{PreAuth, PreAuthError, PreAuthLimits};
pub use refusals::{Reason, RefusalMetrics};
