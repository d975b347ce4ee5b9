//! The storage iterators clients open over the wire (`copyTransactionsFrom`, `zodbconvert`,
//! `IStorageCurrentRecordIteration`): `iterator_start`/`iterator_next` over transactions,
//! `iterator_record_start`/`iterator_record_next` over one transaction's records, `iterator_gc`,
//! and the stateless `record_iternext`.

use std::collections::HashMap;

use zeo_proto::pickle::Value;

use crate::storage::{DataRecord, StorageError, TransactionIterator, TransactionRecord};
use crate::zeo::args::{arg, id_arg, int_arg};
use crate::zeo::conn::Conn;
use crate::zeo::convert::extension_dict;
use crate::zeo::errors::{ErrorReply, exception, key_error, storage_error};

struct IterState {
    inner: TransactionIterator,
    last: Option<TransactionRecord>,
}

enum Iter {
    Txns(Box<IterState>),
    Records(std::vec::IntoIter<DataRecord>),
}

/// A connection's open iterators, by the id the client got for each.
pub(in crate::zeo) struct Iterators {
    open: HashMap<i64, Iter>,
    next_id: i64,
}

impl Iterators {
    pub(in crate::zeo) fn new() -> Iterators {
        Iterators { open: HashMap::new(), next_id: 1 }
    }

    fn insert(&mut self, it: Iter) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, it);
        id
    }
}

impl Conn {
    pub(in crate::zeo) fn iterator_start(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        let start = arg(args, 0).and_then(Value::as_id);
        let stop = arg(args, 1).and_then(Value::as_id);
        let it = self.host().fs.iterator(start.as_ref(), stop.as_ref()).map_err(|e| storage_error(&e))?;
        let id = self.iterators.insert(Iter::Txns(Box::new(IterState { inner: it, last: None })));
        Ok(Value::Int(id))
    }

    pub(in crate::zeo) fn iterator_next(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        let id = int_arg(args, 0, -1);
        let Some(Iter::Txns(state)) = self.iterators.open.get_mut(&id) else { return Err(key_error(Value::Int(id))) };
        match state.inner.next() {
            None => {
                self.iterators.open.remove(&id);
                Ok(Value::None)
            }
            Some(Err(e)) => {
                self.iterators.open.remove(&id);
                Err(storage_error(&e))
            }
            Some(Ok(t)) => {
                let item = Value::Tuple(vec![
                    Value::Bytes(t.tid.to_vec()),
                    Value::Str((t.status as char).to_string()),
                    Value::Bytes(t.user.clone()),
                    Value::Bytes(t.description.clone()),
                    Value::Dict(extension_dict(&t.extension)),
                ]);
                state.last = Some(t);
                Ok(item)
            }
        }
    }

    pub(in crate::zeo) fn iterator_record_start(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        let txn_id = int_arg(args, 0, -1);
        let tid = id_arg(arg(args, 1), "tid")?;
        let records = match self.iterators.open.get(&txn_id) {
            Some(Iter::Txns(state)) => match &state.last {
                Some(t) if t.tid == tid => t.records.clone(),
                _ => {
                    return Err(exception(
                        "builtins.Exception",
                        vec![Value::Str("Out-of-order request for record iterator".into())],
                    ));
                }
            },
            _ => return Err(key_error(Value::Int(txn_id))),
        };
        let id = self.iterators.insert(Iter::Records(records.into_iter()));
        Ok(Value::Int(id))
    }

    pub(in crate::zeo) fn iterator_record_next(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        let id = int_arg(args, 0, -1);
        let Some(Iter::Records(records)) = self.iterators.open.get_mut(&id) else {
            return Err(key_error(Value::Int(id)));
        };
        match records.next() {
            None => {
                self.iterators.open.remove(&id);
                Ok(Value::None)
            }
            Some(r) => Ok(Value::Tuple(vec![
                Value::Bytes(r.oid.to_vec()),
                Value::Bytes(r.tid.to_vec()),
                r.data.map_or(Value::None, Value::Bytes),
                r.data_txn.map_or(Value::None, |t| Value::Bytes(t.to_vec())),
            ])),
        }
    }

    pub(in crate::zeo) fn iterator_gc(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        if let Some(ids) = arg(args, 0).and_then(Value::as_seq) {
            for id in ids.iter().filter_map(Value::as_int) {
                self.iterators.open.remove(&id);
            }
        }
        Ok(())
    }

    pub(in crate::zeo) fn record_iternext(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        let next = arg(args, 0).and_then(Value::as_id);
        match self.host().fs.record_iternext(next.as_ref()).map_err(|e| storage_error(&e))? {
            None => Err(storage_error(&StorageError::PosKey { oid: next.unwrap_or_default() })),
            Some(step) => Ok(Value::Tuple(vec![
                Value::Bytes(step.oid.to_vec()),
                Value::Bytes(step.tid.to_vec()),
                Value::Bytes(step.data),
                step.next.map_or(Value::None, |n| Value::Bytes(n.to_vec())),
            ])),
        }
    }
}
