//! The decoder's error type.
//!
//! Every variant carries the byte offset of the opcode that failed, so a log line can point at the
//! exact spot in a frame or a `Data.fs` record. The encoders cannot fail.

use std::fmt;

/// Why a pickle could not be decoded.
///
/// Callers mostly treat every variant the same way (close the connection, or treat the record
/// as opaque), but the variants are kept distinct so logs say what went wrong and tests can
/// check that a limit, rather than some unrelated bug, stopped a hostile input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The input ended inside an opcode or its argument, or before `STOP`.
    #[error("pickle truncated: opcode at offset {offset} needs more bytes")]
    Truncated {
        /// Offset of the opcode whose argument is incomplete (or of the missing opcode).
        offset: usize,
    },
    /// A byte that is not a pickle opcode of protocols 0–5.
    #[error("unknown pickle opcode 0x{opcode:02x} at offset {offset}")]
    UnknownOpcode {
        /// The offending byte.
        opcode: u8,
        /// Where it was found.
        offset: usize,
    },
    /// `NEXT_BUFFER`/`READONLY_BUFFER`: protocol-5 out-of-band buffers, which neither ZEO nor
    /// ZODB ever produce and which would need a side channel we do not have.
    #[error("out-of-band buffer opcode 0x{opcode:02x} at offset {offset} is not supported")]
    OutOfBandBuffer {
        /// The opcode.
        opcode: u8,
        /// Where it was found.
        offset: usize,
    },
    /// `PROTO` announced a protocol newer than 5.
    #[error("unsupported pickle protocol {protocol} at offset {offset}")]
    UnsupportedProtocol {
        /// The announced protocol.
        protocol: u8,
        /// Offset of the `PROTO` opcode.
        offset: usize,
    },
    /// An opcode needed more stack items than there are above the current mark.
    #[error("pickle stack underflow at opcode 0x{opcode:02x}, offset {offset}")]
    StackUnderflow {
        /// The opcode.
        opcode: u8,
        /// Where it was found.
        offset: usize,
    },
    /// An opcode that consumes up to a `MARK` found no mark.
    #[error("no MARK for opcode 0x{opcode:02x} at offset {offset}")]
    MarkNotFound {
        /// The opcode.
        opcode: u8,
        /// Where it was found.
        offset: usize,
    },
    /// A `GET` named a memo slot that was never `PUT`.
    #[error("memo slot {index} not found at offset {offset}")]
    MemoNotFound {
        /// The memo index asked for.
        index: u64,
        /// Offset of the `GET` opcode.
        offset: usize,
    },
    /// An opcode argument is malformed: a negative length, a bad decimal or float literal, an
    /// unquoted `STRING`, a bad escape, an odd number of dict items, and so on.
    #[error("bad argument for opcode 0x{opcode:02x} at offset {offset}: {reason}")]
    BadArgument {
        /// The opcode.
        opcode: u8,
        /// Where it was found.
        offset: usize,
        /// What was wrong, in a few words.
        reason: &'static str,
    },
    /// Text that must be UTF-8 (or ASCII) was not, or decoded to lone surrogates, which Rust
    /// strings cannot hold.
    #[error("invalid text for opcode at offset {offset}")]
    InvalidText {
        /// Offset of the opcode that produced the text.
        offset: usize,
    },
    /// An opcode was applied to a value of the wrong kind, e.g. `APPEND` to a dict.
    #[error("opcode 0x{opcode:02x} at offset {offset} expected {expected}, found {found}")]
    WrongType {
        /// The opcode.
        opcode: u8,
        /// Where it was found.
        offset: usize,
        /// What the opcode needs.
        expected: &'static str,
        /// What it got ([`crate::pickle::Value::type_name`]).
        found: &'static str,
    },
    /// A global outside the allowlist of [`crate::pickle::GlobalPolicy::WireAllowlist`]. The
    /// reference server refuses these and closes the connection.
    #[error("global {module}.{name} at offset {offset} is not allowed")]
    ForbiddenGlobal {
        /// The module named by the pickle.
        module: String,
        /// The attribute named by the pickle.
        name: String,
        /// Offset of the opcode.
        offset: usize,
    },
    /// `EXT1`/`EXT2`/`EXT4`: an extension-registry code. The registry is empty in every Python
    /// process ZODB runs in, so Python fails on these as well.
    #[error("unregistered extension code {code} at offset {offset}")]
    UnregisteredExtension {
        /// The code.
        code: i64,
        /// Offset of the opcode.
        offset: usize,
    },
    /// The pickle builds an object that contains itself. Python can build such cycles, but a
    /// [`crate::pickle::Value`] is a tree and cannot hold one.
    #[error("self-referencing structure built at offset {offset}")]
    Recursive {
        /// Offset of the opcode that created the object that contains itself.
        offset: usize,
    },
    /// A resource limit of [`crate::pickle::DecodeOptions`] was hit.
    #[error("pickle {limit} limit of {max} exceeded at offset {offset}")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Its configured value.
        max: usize,
        /// Offset of the opcode that went over it.
        offset: usize,
    },
}

/// The resource limits that [`PickleError::LimitExceeded`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`crate::pickle::DecodeOptions::max_depth`].
    Depth,
    /// [`crate::pickle::DecodeOptions::max_memo`].
    Memo,
    /// [`crate::pickle::DecodeOptions::max_items`].
    Items,
    /// [`crate::pickle::DecodeOptions::max_bytes`].
    Bytes,
    /// The 4,300-digit cap on decimal integer literals that Python itself enforces; converting
    /// longer ones costs quadratic time.
    Digits,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Depth => "nesting depth",
            Limit::Memo => "memo size",
            Limit::Items => "item count",
            Limit::Bytes => "shared bytes",
            Limit::Digits => "integer digits",
        })
    }
}
