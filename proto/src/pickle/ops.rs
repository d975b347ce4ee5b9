//! Opcode handlers of the [`Machine`], other than the stack and framing basics in
//! `machine.rs`.

use super::arena::{Node, NodeId};
use super::error::{Limit, PickleError};
use super::machine::{Machine, PersistentIdHook, Step, bad};
use super::opcodes::*;
use super::text::{self, IntTextError};
use super::value::Value;

impl Machine<'_> {
    /// Opcodes that read scalars.
    pub(super) fn step_value(
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
            SHORT_BINBYTES => {
                let n = usize::from(self.take_u8(offset)?);
                Node::Bytes(self.take(n, offset)?.to_vec())
            }
            SHORT_BINSTRING | BINSTRING | STRING => return self.py2_string(op, offset),
            BINBYTES => {
                let n = self.take_u32_len(offset)?;
                Node::Bytes(self.take(n, offset)?.to_vec())
            }
            BINBYTES8 | BYTEARRAY8 => {
                let n = self.take_u64_len(offset)?;
                Node::Bytes(self.take(n, offset)?.to_vec())
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

    /// The Python 2 string opcodes: `bytes` nodes, remembered in `py2_strings`.
    fn py2_string(&mut self, op: u8, offset: usize) -> Result<Step, PickleError> {
        let bytes = match op {
            SHORT_BINSTRING => {
                let n = usize::from(self.take_u8(offset)?);
                self.take(n, offset)?.to_vec()
            }
            BINSTRING => {
                let n = self.take_i32_len(op, offset)?;
                self.take(n, offset)?.to_vec()
            }
            _ => {
                let line = self.take_line(offset)?;
                text::parse_string_opcode(line).map_err(|r| bad(op, offset, r))?
            }
        };
        let id = self.new_node(Node::Bytes(bytes), offset)?;
        self.stack.push(id);
        self.py2_strings.push(id);
        Ok(Step::Continue)
    }

    /// Memo and persistent-id opcodes.
    pub(super) fn step_memo(
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
                    let line = self.take_text_line(offset)?;
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
    pub(super) fn step_build(&mut self, op: u8, offset: usize) -> Result<Step, PickleError> {
        match op {
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let items = self.pop_n(usize::from(op - TUPLE1) + 1, op, offset)?;
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
            Node::Object(o) => o.list_items.extend(items),
            _ => return Err(self.wrong_type(target, op, offset, "list")),
        }
        Ok(())
    }

    /// `SETITEM(S)` into a dict, or into an object (`OrderedDict`, `__reduce__` dict items).
    fn set_items(&mut self, pairs: Vec<(NodeId, NodeId)>, op: u8, offset: usize) -> Result<(), PickleError> {
        let target = self.top(op, offset)?;
        match self.node_mut(target, op, offset)? {
            Node::Dict(dict) => dict.extend(pairs),
            Node::Object(o) => o.dict_items.extend(pairs),
            _ => return Err(self.wrong_type(target, op, offset, "dict")),
        }
        Ok(())
    }

    /// Globals, object construction and `BUILD`.
    pub(super) fn step_object(&mut self, op: u8, offset: usize) -> Result<Step, PickleError> {
        match op {
            GLOBAL => {
                let module = self.take_text_line(offset)?;
                let name = self.take_text_line(offset)?;
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
                let id = self.global(module.as_bytes(), name.as_bytes(), offset)?;
                self.stack.push(id);
            }
            INST => {
                let module = self.take_text_line(offset)?;
                let name = self.take_text_line(offset)?;
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
                let func = self.new_node(Node::global("copyreg".to_owned(), "__newobj_ex__".to_owned()), offset)?;
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
        if let Node::Object(o) = self.node_mut(target, op, offset)?
            && o.state.is_none()
        {
            o.state = Some(new_state);
            return Ok(());
        }
        let moved = self.arena.take(target);
        let inner = self.new_node(moved, offset)?;
        let args = self.new_node(Node::Tuple(Vec::new()), offset)?;
        *self.node_mut(target, op, offset)? = Node::object(inner, args, Some(new_state));
        Ok(())
    }
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
