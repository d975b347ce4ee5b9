//! The pickle virtual machine: executes opcodes into an [`Arena`].
//!
//! Stack discipline follows zodbpickle's C unpickler, the one ZODB and ZEO run: a `MARK` only
//! records a stack position for the next mark-consuming opcode, and other opcodes may reach below
//! it (CPython 3.11 would call that an underflow). Valid pickles never do either; matching
//! zodbpickle means the reference scanner fails on no record that ZODB's `referencesf` accepts.
//! The opcode handlers are in `ops.rs`.
//!
//! Nothing here indexes without a bounds check or does unchecked arithmetic on input-derived
//! numbers: a malformed pickle must produce an error, never a panic.

use std::collections::HashMap;

use super::arena::{Arena, Node, NodeId};
use super::decode::{DecodeOptions, GlobalPolicy, WIRE_SAFE_MODULES};
use super::error::{Limit, PickleError};
use super::opcodes::{DUP, FRAME, HIGHEST_PROTOCOL, MARK, NEWFALSE, NEWTRUE, NONE, POP, POP_MARK, PROTO, STOP};

/// Called with each persistent id as `PERSID`/`BINPERSID` executes, like Python's
/// `persistent_load`.
pub(crate) type PersistentIdHook<'h> = &'h mut dyn FnMut(&Arena, NodeId);

#[derive(Debug)]
pub(crate) struct Machine<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) opts: &'a DecodeOptions,
    pub(crate) arena: Arena,
    pub(super) stack: Vec<NodeId>,
    /// Stack lengths at each `MARK`, innermost last.
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u64, NodeId>,
    /// The `bytes` nodes made by Python 2 string opcodes, in creation order: the tree decoder
    /// reads them as `bytes`, a [`super::Graph`] keeps them apart.
    pub(crate) py2_strings: Vec<NodeId>,
}

/// What an opcode handler tells the loop.
pub(super) enum Step {
    Continue,
    Stop(NodeId),
}

impl<'a> Machine<'a> {
    pub(crate) fn new(data: &'a [u8], opts: &'a DecodeOptions) -> Self {
        Machine {
            data,
            pos: 0,
            opts,
            arena: Arena::default(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            py2_strings: Vec::new(),
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn memo_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.memo.values().copied()
    }

    /// Runs one pickle, from the current position through `STOP`, and returns the root node.
    /// The memo carries over to the next call, as with Python's `Unpickler.load()`; the stack
    /// does not.
    pub(crate) fn run(&mut self, mut hook: Option<PersistentIdHook<'_>>) -> Result<NodeId, PickleError> {
        self.stack.clear();
        self.marks.clear();
        loop {
            let offset = self.pos;
            let op = *self.data.get(offset).ok_or(PickleError::Truncated { offset })?;
            self.pos = offset + 1;
            if let Step::Stop(root) = self.step(op, offset, &mut hook)? {
                return Ok(root);
            }
        }
    }

    // ----- input -----

    pub(super) fn take(&mut self, n: usize, offset: usize) -> Result<&'a [u8], PickleError> {
        let data = self.data;
        let end = self.pos.checked_add(n).ok_or(PickleError::Truncated { offset })?;
        let bytes = data.get(self.pos..end).ok_or(PickleError::Truncated { offset })?;
        self.pos = end;
        Ok(bytes)
    }

    pub(super) fn take_array<const N: usize>(&mut self, offset: usize) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N, offset)?;
        <[u8; N]>::try_from(bytes).map_err(|_| PickleError::Truncated { offset })
    }

    pub(super) fn take_u8(&mut self, offset: usize) -> Result<u8, PickleError> {
        Ok(self.take_array::<1>(offset)?[0])
    }

    /// A length argument: must fit in usize (it cannot fit in the input otherwise).
    pub(super) fn len_from_u64(n: u64, offset: usize) -> Result<usize, PickleError> {
        usize::try_from(n).map_err(|_| PickleError::Truncated { offset })
    }

    pub(super) fn take_u32_len(&mut self, offset: usize) -> Result<usize, PickleError> {
        let n = u32::from_le_bytes(self.take_array(offset)?);
        Self::len_from_u64(u64::from(n), offset)
    }

    pub(super) fn take_u64_len(&mut self, offset: usize) -> Result<usize, PickleError> {
        let n = u64::from_le_bytes(self.take_array(offset)?);
        Self::len_from_u64(n, offset)
    }

    /// A signed 4-byte length (`BINSTRING`, `LONG4`): negative is an error, as in Python.
    pub(super) fn take_i32_len(&mut self, op: u8, offset: usize) -> Result<usize, PickleError> {
        let n = i32::from_le_bytes(self.take_array(offset)?);
        usize::try_from(n).map_err(|_| bad(op, offset, "negative byte count"))
    }

    /// A line including its `\n`.
    pub(super) fn take_line(&mut self, offset: usize) -> Result<&'a [u8], PickleError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated { offset })?;
        self.take(n + 1, offset)
    }

    /// A line without its `\n` (`GLOBAL`/`INST` names, `PERSID`).
    pub(super) fn take_text_line(&mut self, offset: usize) -> Result<&'a [u8], PickleError> {
        let line = self.take_line(offset)?;
        Ok(line.strip_suffix(b"\n").unwrap_or(line))
    }

    // ----- stack -----

    pub(super) fn new_node(&mut self, node: Node, offset: usize) -> Result<NodeId, PickleError> {
        if self.arena.len() >= self.opts.max_items {
            return Err(PickleError::LimitExceeded { limit: Limit::Items, max: self.opts.max_items, offset });
        }
        Ok(self.arena.alloc(node, offset))
    }

    pub(super) fn push(&mut self, node: Node, offset: usize) -> Result<(), PickleError> {
        let id = self.new_node(node, offset)?;
        self.stack.push(id);
        Ok(())
    }

    pub(super) fn pop(&mut self, op: u8, offset: usize) -> Result<NodeId, PickleError> {
        self.stack.pop().ok_or(PickleError::StackUnderflow { opcode: op, offset })
    }

    pub(super) fn top(&self, op: u8, offset: usize) -> Result<NodeId, PickleError> {
        self.stack.last().copied().ok_or(PickleError::StackUnderflow { opcode: op, offset })
    }

    /// Pops the top `n` items, in stack order.
    pub(super) fn pop_n(&mut self, n: usize, op: u8, offset: usize) -> Result<Vec<NodeId>, PickleError> {
        let start = self.stack.len().checked_sub(n).ok_or(PickleError::StackUnderflow { opcode: op, offset })?;
        Ok(self.stack.split_off(start))
    }

    /// Pops everything above the innermost mark, and the mark.
    pub(super) fn pop_mark(&mut self, op: u8, offset: usize) -> Result<Vec<NodeId>, PickleError> {
        let mark = self.marks.pop().ok_or(PickleError::MarkNotFound { opcode: op, offset })?;
        if mark > self.stack.len() {
            return Err(PickleError::StackUnderflow { opcode: op, offset });
        }
        Ok(self.stack.split_off(mark))
    }

    pub(super) fn node_mut(&mut self, id: NodeId, op: u8, offset: usize) -> Result<&mut Node, PickleError> {
        self.arena.get_mut(id).ok_or(PickleError::StackUnderflow { opcode: op, offset })
    }

    pub(super) fn wrong_type(&self, id: NodeId, op: u8, offset: usize, expected: &'static str) -> PickleError {
        PickleError::WrongType { opcode: op, offset, expected, found: self.arena.get(id).type_name() }
    }

    // ----- memo -----

    pub(super) fn memo_put(&mut self, index: u64, op: u8, offset: usize) -> Result<(), PickleError> {
        let id = self.top(op, offset)?;
        if !self.memo.contains_key(&index) && self.memo.len() >= self.opts.max_memo {
            return Err(PickleError::LimitExceeded { limit: Limit::Memo, max: self.opts.max_memo, offset });
        }
        self.memo.insert(index, id);
        Ok(())
    }

    pub(super) fn memo_get(&mut self, index: u64, offset: usize) -> Result<(), PickleError> {
        let id = *self.memo.get(&index).ok_or(PickleError::MemoNotFound { index, offset })?;
        self.stack.push(id);
        Ok(())
    }

    /// The decimal index of the text `GET`/`PUT` opcodes. Like the C code, which hands the line
    /// to a C string function, ignore anything from a NUL byte on.
    pub(super) fn text_index(&mut self, op: u8, offset: usize) -> Result<u64, PickleError> {
        let line = self.take_line(offset)?;
        let line = line.split(|&b| b == 0).next().unwrap_or_default();
        let digits = line.trim_ascii();
        let digits = digits.strip_prefix(b"+").unwrap_or(digits);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad(op, offset, "memo index is not a non-negative integer"));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(op, offset, "memo index too large"))
    }

    // ----- globals -----

    /// A global, after the policy check. Names that are not UTF-8 are never on the allowlist;
    /// with [`GlobalPolicy::Any`] they become [`Node::BadText`], an error only if the value is
    /// used (zodbpickle's noload never decodes them, so reference scanning must not fail).
    pub(super) fn global(&mut self, module: &[u8], name: &[u8], offset: usize) -> Result<NodeId, PickleError> {
        let (m, n) = (std::str::from_utf8(module), std::str::from_utf8(name));
        if self.opts.globals == GlobalPolicy::WireAllowlist && !m.is_ok_and(|m| WIRE_SAFE_MODULES.contains(&m)) {
            return Err(PickleError::ForbiddenGlobal {
                module: String::from_utf8_lossy(module).into_owned(),
                name: String::from_utf8_lossy(name).into_owned(),
                offset,
            });
        }
        let node = match (m, n) {
            (Ok(module), Ok(name)) => Node::global(module.to_owned(), name.to_owned()),
            _ => Node::BadText,
        };
        self.new_node(node, offset)
    }

    pub(super) fn object(&mut self, class: NodeId, args: NodeId, offset: usize) -> Result<NodeId, PickleError> {
        self.new_node(Node::object(class, args, None), offset)
    }

    // ----- opcodes -----

    fn step(&mut self, op: u8, offset: usize, hook: &mut Option<PersistentIdHook<'_>>) -> Result<Step, PickleError> {
        match op {
            PROTO => {
                let protocol = self.take_u8(offset)?;
                if protocol > HIGHEST_PROTOCOL {
                    return Err(PickleError::UnsupportedProtocol { protocol, offset });
                }
            }
            FRAME => {
                // Framing only groups opcodes for buffered reading; check it and move on.
                let n = self.take_u64_len(offset)?;
                if n > self.data.len().saturating_sub(self.pos) {
                    return Err(PickleError::Truncated { offset });
                }
            }
            STOP => return self.pop(op, offset).map(Step::Stop),
            MARK => self.marks.push(self.stack.len()),
            POP => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop(op, offset)?;
                }
            }
            POP_MARK => {
                self.pop_mark(op, offset)?;
            }
            DUP => {
                let id = self.top(op, offset)?;
                self.stack.push(id);
            }
            NONE => self.push(Node::None, offset)?,
            NEWTRUE => self.push(Node::Bool(true), offset)?,
            NEWFALSE => self.push(Node::Bool(false), offset)?,
            _ => return self.step_value(op, offset, hook),
        }
        Ok(Step::Continue)
    }
}

pub(super) fn bad(opcode: u8, offset: usize, reason: &'static str) -> PickleError {
    PickleError::BadArgument { opcode, offset, reason }
}
