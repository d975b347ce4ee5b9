//! The public decoding API: options, [`decode`] and [`Decoder`].

use super::arena::NodeId;
use super::convert::{Budget, to_value};
use super::error::PickleError;
use super::machine::Machine;
use super::value::Value;

/// Modules whose globals a ZEO server accepts in client messages: the reference server's
/// `_SAFE_MODULE_NAMES` (`ZEO/asyncio/marshal.py`). `ZopeUndo.Prefix` arrives inside `undoInfo`
/// specifications; the rest cover builtin types and exceptions, under Python 2 and 3 names.
pub const WIRE_SAFE_MODULES: [&str; 5] = ["ZopeUndo.Prefix", "zodbpickle", "builtins", "copy_reg", "__builtin__"];

/// Which `GLOBAL`/`STACK_GLOBAL`/`INST` names a pickle may use. Nothing is ever imported or
/// called either way; the allowlist exists so that we refuse exactly what the reference server
/// refuses (it closes the connection), keeping client-visible behaviour the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPolicy {
    /// Only modules in [`WIRE_SAFE_MODULES`]; anything else is
    /// [`PickleError::ForbiddenGlobal`]. For messages from clients.
    WireAllowlist,
    /// Any module. For database records and other trusted pickles, which name application
    /// classes.
    Any,
}

/// Default for [`DecodeOptions::max_depth`]: deeper than anything ZEO or ZODB writes, shallow
/// enough that recursive walks of the result are safe on a 2 MiB thread stack.
pub const DEFAULT_MAX_DEPTH: usize = 256;
/// Default for [`DecodeOptions::max_memo`].
pub const DEFAULT_MAX_MEMO: usize = 1 << 20;
/// Default for [`DecodeOptions::max_items`].
pub const DEFAULT_MAX_ITEMS: usize = 1 << 20;
/// Default for [`DecodeOptions::max_bytes`].
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

/// How to decode: the global policy and the resource limits.
///
/// The input itself bounds the work done while reading opcodes (each opcode consumes input, and
/// every length is checked against the bytes left before anything is allocated). The limits
/// bound what memo sharing can multiply and what the caller will later walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Which globals are allowed.
    pub globals: GlobalPolicy,
    /// Maximum nesting of the result (a scalar at the top is depth 1).
    pub max_depth: usize,
    /// Maximum number of distinct memo slots.
    pub max_memo: usize,
    /// Maximum number of values built while decoding, and separately in the result (where
    /// every copy of a memo-shared value counts).
    pub max_items: usize,
    /// Maximum `str`/`bytes` payload of the result beyond the input's own length. Payload
    /// that is really in the input is always allowed, so this only caps copies made through
    /// memo references.
    pub max_bytes: usize,
}

impl DecodeOptions {
    /// For client messages: [`GlobalPolicy::WireAllowlist`] and the default limits.
    pub fn wire() -> Self {
        DecodeOptions {
            globals: GlobalPolicy::WireAllowlist,
            max_depth: DEFAULT_MAX_DEPTH,
            max_memo: DEFAULT_MAX_MEMO,
            max_items: DEFAULT_MAX_ITEMS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// For database records (e.g. the pickled transaction extension): [`GlobalPolicy::Any`]
    /// and the default limits.
    pub fn records() -> Self {
        DecodeOptions { globals: GlobalPolicy::Any, ..DecodeOptions::wire() }
    }

    /// The limits for converting a result read from `input_len` bytes of input.
    pub(crate) fn budget(&self, input_len: usize) -> Budget {
        Budget {
            max_depth: self.max_depth,
            max_items: self.max_items,
            max_bytes: self.max_bytes.saturating_add(input_len),
        }
    }
}

/// The safe choice: [`DecodeOptions::wire`].
impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions::wire()
    }
}

/// Decodes one pickle from the start of `data`.
///
/// Returns the value and the number of bytes consumed, including `STOP`; anything after that is
/// not looked at (a ZODB record holds two pickles back to back; see [`Decoder`]).
///
/// # Errors
///
/// Any [`PickleError`]: malformed or truncated input, a forbidden global, a self-referencing
/// structure, an exceeded limit. Never panics, whatever the input.
pub fn decode(data: &[u8], opts: &DecodeOptions) -> Result<(Value, usize), PickleError> {
    let mut machine = Machine::new(data, opts);
    let root = machine.run(None)?;
    let consumed = machine.position();
    let value = to_value(&mut machine.arena, root, [], opts.budget(data.len()))?;
    Ok((value, consumed))
}

/// Reads several pickles written one after the other by the same pickler, sharing the memo, as
/// Python's `Unpickler.load()` does when called repeatedly.
///
/// This is how ZODB reads a data record: the class metadata, then the state, and the state may
/// refer back (`BINGET`) to objects memoized by the first pickle, typically the class.
pub struct Decoder<'a> {
    machine: Machine<'a>,
    input_len: usize,
    opts: &'a DecodeOptions,
}

/// Shows the position, not the input (which may be megabytes).
impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("position", &self.position()).field("len", &self.input_len).finish()
    }
}

impl<'a> Decoder<'a> {
    /// A decoder positioned at the start of `data`.
    pub fn new(data: &'a [u8], opts: &'a DecodeOptions) -> Self {
        Decoder { machine: Machine::new(data, opts), input_len: data.len(), opts }
    }

    /// Decodes the next pickle.
    ///
    /// # Errors
    ///
    /// As [`decode`]. After an error the decoder's state is unspecified; stop using it.
    pub fn next_value(&mut self) -> Result<Value, PickleError> {
        let root = self.machine.run(None)?;
        let memo: Vec<NodeId> = self.machine.memo_nodes().collect();
        to_value(&mut self.machine.arena, root, memo, self.opts.budget(self.input_len))
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.machine.position()
    }

    /// Whether all input has been consumed.
    pub fn at_end(&self) -> bool {
        self.machine.position() >= self.input_len
    }
}
