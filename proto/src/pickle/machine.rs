//! The pickle virtual machine: executes opcodes into an [`Arena`].
//!
//! Stack discipline follows CPython 3.11's C unpickler: `MARK` sets a fence, and opcodes other
//! than the mark-consuming ones cannot reach below it. Valid pickles never try; hostile ones get
//! [`PickleError::StackUnderflow`].
//!
//! Nothing here indexes without a bounds check or does unchecked arithmetic on input-derived
//! numbers: a malformed pickle must produce an error, never a panic.

use std::collections::HashMap;

use super::arena::{Arena, Node, NodeId};
use super::decode::{DecodeOptions, GlobalPolicy, WIRE_SAFE_MODULES};
use super::error::{Limit, PickleError};
use super::opcodes::*;
use super::text::{self, IntTextError};
use super::value::Value;

/// Called with each persistent id as `PERSID`/`BINPERSID` executes, like Python's
/// `persistent_load`.
pub(crate) type PersistentIdHook<'h> = &'h mut dyn FnMut(&Arena, NodeId);

#[derive(Debug)]
pub(crate) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    opts: &'a DecodeOptions,
    pub(crate) arena: Arena,
    stack: Vec<NodeId>,
    /// Stack lengths at each `MARK`, innermost last; the last one is the fence.
    marks: Vec<usize>,
    memo: HashMap<u64, NodeId>,
}

/// What an opcode handler tells the loop.
enum Step {
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

    fn take(&mut self, n: usize, offset: usize) -> Result<&'a [u8], PickleError> {
        let data = self.data;
        let end = self.pos.checked_add(n).ok_or(PickleError::Truncated { offset })?;
        let bytes = data.get(self.pos..end).ok_or(PickleError::Truncated { offset })?;
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self, offset: usize) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N, offset)?;
        <[u8; N]>::try_from(bytes).map_err(|_| PickleError::Truncated { offset })
    }

    fn take_u8(&mut self, offset: usize) -> Result<u8, PickleError> {
        Ok(self.take_array::<1>(offset)?[0])
    }

    /// A length argument: must fit in usize (it cannot fit in the input otherwise).
    fn len_from_u64(n: u64, offset: usize) -> Result<usize, PickleError> {
        usize::try_from(n).map_err(|_| PickleError::Truncated { offset })
    }

    fn take_u32_len(&mut self, offset: usize) -> Result<usize, PickleError> {
        let n = u32::from_le_bytes(self.take_array(offset)?);
        Self::len_from_u64(u64::from(n), offset)
    }

    fn take_u64_len(&mut self, offset: usize) -> Result<usize, PickleError> {
        let n = u64::from_le_bytes(self.take_array(offset)?);
        Self::len_from_u64(n, offset)
    }

    /// A signed 4-byte length (`BINSTRING`, `LONG4`): negative is an error, as in Python.
    fn take_i32_len(&mut self, op: u8, offset: usize) -> Result<usize, PickleError> {
        let n = i32::from_le_bytes(self.take_array(offset)?);
        usize::try_from(n).map_err(|_| bad(op, offset, "negative byte count"))
    }

    /// A line including its `\n`.
    fn take_line(&mut self, offset: usize) -> Result<&'a [u8], PickleError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated { offset })?;
        self.take(n + 1, offset)
    }

    /// A line without its `\n`, as UTF-8 (`GLOBAL`/`INST` names).
    fn take_utf8_line(&mut self, offset: usize) -> Result<String, PickleError> {
        let line = self.take_line(offset)?;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        String::from_utf8(line.to_vec()).map_err(|_| PickleError::InvalidText { offset })
    }

    // ----- stack -----

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn new_node(&mut self, node: Node, offset: usize) -> Result<NodeId, PickleError> {
        if self.arena.len() >= self.opts.max_items {
            return Err(PickleError::LimitExceeded { limit: Limit::Items, max: self.opts.max_items, offset });
        }
        Ok(self.arena.alloc(node, offset))
    }

    fn push(&mut self, node: Node, offset: usize) -> Result<(), PickleError> {
        let id = self.new_node(node, offset)?;
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self, op: u8, offset: usize) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.fence() {
            return Err(PickleError::StackUnderflow { opcode: op, offset });
        }
        self.stack.pop().ok_or(PickleError::StackUnderflow { opcode: op, offset })
    }

    fn top(&self, op: u8, offset: usize) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.fence() {
            return Err(PickleError::StackUnderflow { opcode: op, offset });
        }
        self.stack.last().copied().ok_or(PickleError::StackUnderflow { opcode: op, offset })
    }

    /// Pops everything above the innermost mark, and the mark.
    fn pop_mark(&mut self, op: u8, offset: usize) -> Result<Vec<NodeId>, PickleError> {
        let mark = self.marks.pop().ok_or(PickleError::MarkNotFound { opcode: op, offset })?;
        if mark > self.stack.len() {
            return Err(PickleError::StackUnderflow { opcode: op, offset });
        }
        Ok(self.stack.split_off(mark))
    }

    fn node_mut(&mut self, id: NodeId, op: u8, offset: usize) -> Result<&mut Node, PickleError> {
        self.arena.get_mut(id).ok_or(PickleError::StackUnderflow { opcode: op, offset })
    }

    fn wrong_type(&self, id: NodeId, op: u8, offset: usize, expected: &'static str) -> PickleError {
        PickleError::WrongType { opcode: op, offset, expected, found: self.arena.get(id).type_name() }
    }

    // ----- memo -----

    fn memo_put(&mut self, index: u64, op: u8, offset: usize) -> Result<(), PickleError> {
        let id = self.top(op, offset)?;
        if !self.memo.contains_key(&index) && self.memo.len() >= self.opts.max_memo {
            return Err(PickleError::LimitExceeded { limit: Limit::Memo, max: self.opts.max_memo, offset });
        }
        self.memo.insert(index, id);
        Ok(())
    }

    fn memo_get(&mut self, index: u64, offset: usize) -> Result<(), PickleError> {
        let id = *self.memo.get(&index).ok_or(PickleError::MemoNotFound { index, offset })?;
        self.stack.push(id);
        Ok(())
    }

    /// The decimal index of the text `GET`/`PUT` opcodes.
    fn text_index(&mut self, op: u8, offset: usize) -> Result<u64, PickleError> {
        let line = self.take_line(offset)?;
        let digits = line.trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad(op, offset, "memo index is not a non-negative integer"));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(op, offset, "memo index too large"))
    }

    // ----- globals -----

    fn global(&mut self, module: String, name: String, offset: usize) -> Result<NodeId, PickleError> {
        if self.opts.globals == GlobalPolicy::WireAllowlist && !WIRE_SAFE_MODULES.contains(&module.as_str()) {
            return Err(PickleError::ForbiddenGlobal { module, name, offset });
        }
        self.new_node(Node::Global { module, name }, offset)
    }

    fn object(&mut self, class: NodeId, args: NodeId, offset: usize) -> Result<NodeId, PickleError> {
        self.new_node(Node::Object { class, args, state: None, list_items: Vec::new(), dict_items: Vec::new() }, offset)
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

    /// Opcodes that read scalars.
    fn step_value(
        &mut self,
        op: u8,
        offset: usize,
        hook: &mut Option<PersistentIdHook<'_>>,
    ) -> Result<Step, PickleError> {
        let node = match op {
            BININT => Node::Int(i64::from(i32::from_le_bytes(self.take_array(offset)?))),
            BININT1 => Node::Int(i64::from(self.take_u8(offset)?)),
            BININT2 => Node::Int(i64::from(u16::from_le_bytes(self.take_array(offset)?))),
            INT => {
                let line = self.take_line(offset)?;
                int_node(text::parse_int_opcode(line), op, offset)?
            }
            LONG => {
                let line = self.take_line(offset)?;
                int_node(text::parse_long_opcode(line), op, offset)?
            }
            LONG1 | LONG4 => {
                let n = if op == LONG1 { usize::from(self.take_u8(offset)?) } else { self.take_i32_len(op, offset)? };
                let bytes = self.take(n, offset)?;
                match Value::int_from_le_bytes(bytes) {
                    Value::Int(i) => Node::Int(i),
                    Value::BigInt(b) => Node::BigInt(b),
                    _ => Node::Int(0), // int_from_le_bytes only returns ints.
                }
            }
            BINFLOAT => Node::Float(f64::from_be_bytes(self.take_array(offset)?)),
            FLOAT => {
                let line = self.take_line(offset)?;
                let f = text::parse_float_opcode(line)
                    .ok_or_else(|| bad(op, offset, "could not convert string to float"))?;
                Node::Float(f)
            }
            SHORT_BINBYTES | SHORT_BINSTRING => {
                let n = usize::from(self.take_u8(offset)?);
                Node::Bytes(self.take(n, offset)?.to_vec())
            }
            BINBYTES => {
                let n = self.take_u32_len(offset)?;
                Node::Bytes(self.take(n, offset)?.to_vec())
            }
            BINSTRING => {
                let n = self.take_i32_len(op, offset)?;
                Node::Bytes(self.take(n, offset)?.to_vec())
            }
            BINBYTES8 | BYTEARRAY8 => {
                let n = self.take_u64_len(offset)?;
                Node::Bytes(self.take(n, offset)?.to_vec())
            }
            STRING => {
                let line = self.take_line(offset)?;
                Node::Bytes(text::parse_string_opcode(line).map_err(|r| bad(op, offset, r))?)
            }
            SHORT_BINUNICODE => {
                let n = usize::from(self.take_u8(offset)?);
                utf8_node(self.take(n, offset)?)
            }
            BINUNICODE => {
                let n = self.take_u32_len(offset)?;
                utf8_node(self.take(n, offset)?)
            }
            BINUNICODE8 => {
                let n = self.take_u64_len(offset)?;
                utf8_node(self.take(n, offset)?)
            }
            UNICODE => {
                let line = self.take_line(offset)?;
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                text::raw_unicode_escape_decode(line).map_or(Node::BadText, Node::Str)
            }
            EMPTY_TUPLE => Node::Tuple(Vec::new()),
            EMPTY_LIST => Node::List(Vec::new()),
            EMPTY_DICT => Node::Dict(Vec::new()),
            EMPTY_SET => Node::Set(Vec::new()),
            EXT1 => Node::Ext(i64::from(self.take_u8(offset)?)),
            EXT2 => Node::Ext(i64::from(u16::from_le_bytes(self.take_array(offset)?))),
            EXT4 => Node::Ext(i64::from(i32::from_le_bytes(self.take_array(offset)?))),
            NEXT_BUFFER | READONLY_BUFFER => {
                return Err(PickleError::OutOfBandBuffer { opcode: op, offset });
            }
            _ => return self.step_memo(op, offset, hook),
        };
        self.push(node, offset)?;
        Ok(Step::Continue)
    }

    /// Memo and persistent-id opcodes.
    fn step_memo(
        &mut self,
        op: u8,
        offset: usize,
        hook: &mut Option<PersistentIdHook<'_>>,
    ) -> Result<Step, PickleError> {
        match op {
            BINPUT => {
                let i = self.take_u8(offset)?;
                self.memo_put(u64::from(i), op, offset)?;
            }
            LONG_BINPUT => {
                let i = u32::from_le_bytes(self.take_array(offset)?);
                self.memo_put(u64::from(i), op, offset)?;
            }
            PUT => {
                let i = self.text_index(op, offset)?;
                self.memo_put(i, op, offset)?;
            }
            MEMOIZE => {
                let i = u64::try_from(self.memo.len()).unwrap_or(u64::MAX);
                self.memo_put(i, op, offset)?;
            }
            BINGET => {
                let i = self.take_u8(offset)?;
                self.memo_get(u64::from(i), offset)?;
            }
            LONG_BINGET => {
                let i = u32::from_le_bytes(self.take_array(offset)?);
                self.memo_get(u64::from(i), offset)?;
            }
            GET => {
                let i = self.text_index(op, offset)?;
                self.memo_get(i, offset)?;
            }
            PERSID | BINPERSID => {
                let pid = if op == PERSID {
                    // zodbpickle passes the text persistent id as bytes.
                    let line = self.take_line(offset)?;
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    self.new_node(Node::Bytes(line.to_vec()), offset)?
                } else {
                    self.pop(op, offset)?
                };
                if let Some(hook) = hook.as_mut() {
                    hook(&self.arena, pid);
                }
                self.push(Node::PersistentId(pid), offset)?;
            }
            _ => return self.step_build(op, offset),
        }
        Ok(Step::Continue)
    }

    /// Opcodes that build containers and objects.
    fn step_build(&mut self, op: u8, offset: usize) -> Result<Step, PickleError> {
        match op {
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = usize::from(op - TUPLE1) + 1;
                if self.stack.len().saturating_sub(self.fence()) < n {
                    return Err(PickleError::StackUnderflow { opcode: op, offset });
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items), offset)?;
            }
            TUPLE => {
                let items = self.pop_mark(op, offset)?;
                self.push(Node::Tuple(items), offset)?;
            }
            LIST => {
                let items = self.pop_mark(op, offset)?;
                self.push(Node::List(items), offset)?;
            }
            FROZENSET => {
                let items = self.pop_mark(op, offset)?;
                self.push(Node::FrozenSet(items), offset)?;
            }
            DICT => {
                let items = self.pop_mark(op, offset)?;
                let pairs = pairs(items, op, offset)?;
                self.push(Node::Dict(pairs), offset)?;
            }
            APPEND => {
                let item = self.pop(op, offset)?;
                self.append(vec![item], op, offset)?;
            }
            APPENDS => {
                let items = self.pop_mark(op, offset)?;
                self.append(items, op, offset)?;
            }
            ADDITEMS => {
                let items = self.pop_mark(op, offset)?;
                let target = self.top(op, offset)?;
                match self.node_mut(target, op, offset)? {
                    Node::Set(set) => set.extend(items),
                    _ => return Err(self.wrong_type(target, op, offset, "set")),
                }
            }
            SETITEM => {
                let value = self.pop(op, offset)?;
                let key = self.pop(op, offset)?;
                self.set_items(vec![(key, value)], op, offset)?;
            }
            SETITEMS => {
                let items = self.pop_mark(op, offset)?;
                let pairs = pairs(items, op, offset)?;
                self.set_items(pairs, op, offset)?;
            }
            _ => return self.step_object(op, offset),
        }
        Ok(Step::Continue)
    }

    /// `APPEND(S)` into a list, or into an object (a list subclass, or `__reduce__` list items).
    fn append(&mut self, items: Vec<NodeId>, op: u8, offset: usize) -> Result<(), PickleError> {
        let target = self.top(op, offset)?;
        match self.node_mut(target, op, offset)? {
            Node::List(list) => list.extend(items),
            Node::Object { list_items, .. } => list_items.extend(items),
            _ => return Err(self.wrong_type(target, op, offset, "list")),
        }
        Ok(())
    }

    /// `SETITEM(S)` into a dict, or into an object (`OrderedDict`, `__reduce__` dict items).
    fn set_items(&mut self, pairs: Vec<(NodeId, NodeId)>, op: u8, offset: usize) -> Result<(), PickleError> {
        let target = self.top(op, offset)?;
        match self.node_mut(target, op, offset)? {
            Node::Dict(dict) => dict.extend(pairs),
            Node::Object { dict_items, .. } => dict_items.extend(pairs),
            _ => return Err(self.wrong_type(target, op, offset, "dict")),
        }
        Ok(())
    }

    /// Globals, object construction and `BUILD`.
    fn step_object(&mut self, op: u8, offset: usize) -> Result<Step, PickleError> {
        match op {
            GLOBAL => {
                let module = self.take_utf8_line(offset)?;
                let name = self.take_utf8_line(offset)?;
                let id = self.global(module, name, offset)?;
                self.stack.push(id);
            }
            STACK_GLOBAL => {
                let name = self.pop(op, offset)?;
                let module = self.pop(op, offset)?;
                let (Node::Str(module), Node::Str(name)) = (self.arena.get(module), self.arena.get(name)) else {
                    return Err(bad(op, offset, "STACK_GLOBAL requires str"));
                };
                let (module, name) = (module.clone(), name.clone());
                let id = self.global(module, name, offset)?;
                self.stack.push(id);
            }
            INST => {
                let module = self.take_utf8_line(offset)?;
                let name = self.take_utf8_line(offset)?;
                let items = self.pop_mark(op, offset)?;
                let class = self.global(module, name, offset)?;
                let args = self.new_node(Node::Tuple(items), offset)?;
                let id = self.object(class, args, offset)?;
                self.stack.push(id);
            }
            OBJ => {
                let mut items = self.pop_mark(op, offset)?.into_iter();
                let class = items.next().ok_or(PickleError::StackUnderflow { opcode: op, offset })?;
                let args = self.new_node(Node::Tuple(items.collect()), offset)?;
                let id = self.object(class, args, offset)?;
                self.stack.push(id);
            }
            REDUCE | NEWOBJ => {
                let args = self.pop(op, offset)?;
                let class = self.pop(op, offset)?;
                let id = self.object(class, args, offset)?;
                self.stack.push(id);
            }
            NEWOBJ_EX => {
                let kwargs = self.pop(op, offset)?;
                let args = self.pop(op, offset)?;
                let cls = self.pop(op, offset)?;
                let func = self.new_node(
                    Node::Global { module: "copyreg".to_owned(), name: "__newobj_ex__".to_owned() },
                    offset,
                )?;
                let call_args = self.new_node(Node::Tuple(vec![cls, args, kwargs]), offset)?;
                let id = self.object(func, call_args, offset)?;
                self.stack.push(id);
            }
            BUILD => self.build(op, offset)?,
            _ => return Err(PickleError::UnknownOpcode { opcode: op, offset }),
        }
        Ok(Step::Continue)
    }

    /// `BUILD` sets the state of the object on top. If that is not a freshly built object (no
    /// state yet), it is wrapped as `Object { class: <it>, args: (), state }` in place, so memo
    /// references to it see the state too. Python would call `__setstate__` on whatever it is.
    fn build(&mut self, op: u8, offset: usize) -> Result<(), PickleError> {
        let new_state = self.pop(op, offset)?;
        let target = self.top(op, offset)?;
        if let Node::Object { state: state @ None, .. } = self.node_mut(target, op, offset)? {
            *state = Some(new_state);
            return Ok(());
        }
        let moved = self.arena.take(target);
        let inner = self.new_node(moved, offset)?;
        let args = self.new_node(Node::Tuple(Vec::new()), offset)?;
        let wrapped =
            Node::Object { class: inner, args, state: Some(new_state), list_items: Vec::new(), dict_items: Vec::new() };
        *self.node_mut(target, op, offset)? = wrapped;
        Ok(())
    }
}

fn bad(opcode: u8, offset: usize, reason: &'static str) -> PickleError {
    PickleError::BadArgument { opcode, offset, reason }
}

fn int_node(parsed: Result<Value, IntTextError>, op: u8, offset: usize) -> Result<Node, PickleError> {
    match parsed {
        Ok(Value::Bool(b)) => Ok(Node::Bool(b)),
        Ok(Value::Int(i)) => Ok(Node::Int(i)),
        Ok(Value::BigInt(b)) => Ok(Node::BigInt(b)),
        Ok(_) | Err(IntTextError::Invalid) => Err(bad(op, offset, "could not convert string to int")),
        Err(IntTextError::TooManyDigits) => {
            Err(PickleError::LimitExceeded { limit: Limit::Digits, max: text::MAX_INT_DIGITS, offset })
        }
    }
}

/// `BINUNICODE` and friends. Python decodes with `surrogatepass`, so text with encoded
/// surrogates is valid there; it becomes [`Node::BadText`] here.
fn utf8_node(bytes: &[u8]) -> Node {
    match std::str::from_utf8(bytes) {
        Ok(s) => Node::Str(s.to_owned()),
        Err(_) => Node::BadText,
    }
}

/// Groups `k1 v1 k2 v2 …` into pairs; an odd count is an error, as in Python.
fn pairs(items: Vec<NodeId>, op: u8, offset: usize) -> Result<Vec<(NodeId, NodeId)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return Err(bad(op, offset, "odd number of items"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::with_capacity(it.len() / 2);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}
