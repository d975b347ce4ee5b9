//! Oid allocation and the two-phase commit as clients drive it: `tpc_begin`, the buffered changes
//! (`storea`, `restorea`, `deleteObject`, `checkCurrentSerialInTransaction`, `undoa`), then `vote`,
//! `tpc_finish` or `tpc_abort`. The transaction's state and the vote and finish tasks, which wait for
//! the commit lock and for durability, are in `commit`.

use std::sync::atomic::Ordering;

use zeo_proto::pickle::Value;

use crate::storage::{StorageError, Transaction, TxnMeta, parse_undo_id};
use crate::zeo::args::{arg, as_plain_dict, bytes_arg, bytes_list, id_arg, int_arg, serial_arg};
use crate::zeo::commit::{self, Phase, ServerTxn, TaskCtx};
use crate::zeo::conn::Conn;
use crate::zeo::errors::{ErrorReply, read_only, storage_error, transaction_error};

impl Conn {
    pub(in crate::zeo) fn new_oids(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        self.allocate_oids(int_arg(args, 0, 100).clamp(1, 100))
    }

    pub(in crate::zeo) fn new_oid(&mut self, _args: &[Value]) -> Result<Value, ErrorReply> {
        self.allocate_oids(1).map(|v| match v {
            Value::List(mut l) => l.pop().unwrap_or(Value::None),
            other => other,
        })
    }

    fn allocate_oids(&self, n: i64) -> Result<Value, ErrorReply> {
        if self.read_only {
            return Err(read_only());
        }
        let n = u64::try_from(n).unwrap_or(1);
        self.host().fs.new_oids(n).map(bytes_list).map_err(|e| storage_error(&e))
    }

    pub(in crate::zeo) fn tpc_begin(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        if self.read_only {
            return Err(read_only());
        }
        let id = args.first().cloned().unwrap_or(Value::None);
        {
            let slot = self.slot.lock().expect("transaction slot poisoned");
            if let Some(t) = slot.as_ref() {
                if t.id == id {
                    return Ok(()); // a duplicate tpc_begin is ignored
                }
                return Err(transaction_error("tpc_begin while another transaction is in progress"));
            }
        }
        let extension = match arg(args, 3).map(as_plain_dict) {
            Some(Some(items)) if !items.is_empty() => zeo_proto::pickle::encode_memo(&Value::Dict(items)),
            _ => Vec::new(),
        };
        let mut meta = TxnMeta::new(bytes_arg(arg(args, 1)), bytes_arg(arg(args, 2)), extension);
        meta.tid = arg(args, 4).and_then(Value::as_id);
        if let Some(status) = arg(args, 5).and_then(|v| {
            v.as_str().map(str::to_string).or_else(|| v.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
        }) {
            meta.status = status.bytes().next().unwrap_or(b' ');
        }
        let txn = ServerTxn::new(id, self.host().clone(), Transaction::begin(meta));
        *self.slot.lock().expect("transaction slot poisoned") = Some(txn);
        Ok(())
    }

    pub(in crate::zeo) fn storea(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        let oid = id_arg(arg(args, 0), "oid")?;
        let serial = serial_arg(args.get(1))?;
        let data = bytes_arg(arg(args, 2));
        self.host().stats.stores.fetch_add(1, Ordering::Relaxed);
        self.host().metrics.stores.inc();
        self.with_txn(arg(args, 3), |t| {
            t.invalidate.push(oid);
            t.engine.as_mut().map_or(Ok(()), |e| e.store(oid, serial, data))
        })
    }

    pub(in crate::zeo) fn check_current_serial(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        let oid = id_arg(arg(args, 0), "oid")?;
        let serial = serial_arg(args.get(1))?;
        self.with_txn(arg(args, 2), |t| t.engine.as_mut().map_or(Ok(()), |e| e.check_current_serial(oid, serial)))
    }

    pub(in crate::zeo) fn delete_object(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        let oid = id_arg(arg(args, 0), "oid")?;
        let serial = serial_arg(args.get(1))?;
        self.with_txn(arg(args, 2), |t| {
            // The reference server does not invalidate deletions; we do, so no client keeps
            // a deleted object in its cache.
            t.invalidate.push(oid);
            t.engine.as_mut().map_or(Ok(()), |e| e.delete_object(oid, serial))
        })
    }

    pub(in crate::zeo) fn restorea(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        let oid = id_arg(arg(args, 0), "oid")?;
        let serial = serial_arg(args.get(1))?;
        let data = match args.get(2) {
            Some(Value::None) | None => None,
            Some(v) => Some(bytes_arg(Some(v))),
        };
        let prev_txn = arg(args, 3).and_then(Value::as_id);
        self.host().stats.stores.fetch_add(1, Ordering::Relaxed);
        self.with_txn(arg(args, 4), |t| {
            t.invalidate.push(oid);
            t.engine.as_mut().map_or(Ok(()), |e| e.restore(oid, serial, data, prev_txn))
        })
    }

    pub(in crate::zeo) fn undoa(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        let id = bytes_arg(arg(args, 0));
        self.with_txn(arg(args, 1), |t| match parse_undo_id(&id) {
            Ok(tid) => t.engine.as_mut().map_or(Ok(()), |e| e.undo(tid)),
            Err(e) => {
                t.deferred.get_or_insert(e);
                Ok(())
            }
        })
    }

    /// Runs `f` on the open transaction named `id`; a missing or different transaction is a
    /// StorageTransactionError (which closes the connection, as in ZEO).
    pub(in crate::zeo) fn with_txn(
        &mut self,
        id: Option<&Value>,
        f: impl FnOnce(&mut ServerTxn) -> Result<(), StorageError>,
    ) -> Result<(), ErrorReply> {
        let mut slot = self.slot.lock().expect("transaction slot poisoned");
        let t = match slot.as_mut() {
            Some(t) if Some(&t.id) == id && t.phase == Phase::Open => t,
            Some(_) => {
                return Err(transaction_error(
                    "operation for a transaction that is not the current one, or already voting",
                ));
            }
            None => return Err(transaction_error("no transaction in progress")),
        };
        f(t).map_err(|e| storage_error(&e))
    }

    pub(in crate::zeo) fn vote(&mut self, msgid: Value, args: &[Value]) {
        let id = args.first();
        let round = {
            let mut slot = self.slot.lock().expect("transaction slot poisoned");
            match slot.as_mut() {
                Some(t) if Some(&t.id) == id && t.phase == Phase::Open => {
                    if let Some(e) = t.deferred.take() {
                        slot.take();
                        drop(slot);
                        return self.reply(msgid, Err(storage_error(&e)));
                    }
                    t.phase = Phase::Voting;
                    t.vote_round += 1;
                    t.vote_round
                }
                Some(t) if Some(&t.id) == id => {
                    drop(slot);
                    return self.reply(msgid, Err(transaction_error("vote while already voting")));
                }
                _ => {
                    drop(slot);
                    return self.reply(msgid, Err(transaction_error("vote without a transaction")));
                }
            }
        };
        self.tasks.spawn(commit::vote(self.task_ctx(), msgid, round));
    }

    pub(in crate::zeo) fn tpc_finish(&mut self, msgid: Value, args: &[Value]) {
        let id = args.first();
        let taken = {
            let mut slot = self.slot.lock().expect("transaction slot poisoned");
            match slot.as_ref() {
                Some(t) if Some(&t.id) == id && t.phase == Phase::Voted => slot.take(),
                _ => None,
            }
        };
        match taken {
            Some(t) => {
                self.tasks.spawn(commit::finish(self.task_ctx(), msgid, t));
            }
            None => self.reply(msgid, Err(transaction_error("tpc_finish without a voted transaction"))),
        }
    }

    pub(in crate::zeo) fn tpc_abort(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        let id = args.first();
        let mut slot = self.slot.lock().expect("transaction slot poisoned");
        if slot.as_ref().is_some_and(|t| Some(&t.id) == id) {
            let t = slot.take();
            drop(slot);
            drop(t);
            if let Some(h) = &self.host {
                h.stats.aborts.fetch_add(1, Ordering::Relaxed);
                h.metrics.aborts.inc();
            }
        }
        Ok(Value::None)
    }

    fn task_ctx(&self) -> TaskCtx {
        TaskCtx {
            conn: self.id,
            outbox: self.outbox.clone(),
            slot: self.slot.clone(),
            host: self.host().clone(),
            close: self.outbox.close.clone(),
            transaction_timeout: self.server.opts.transaction_timeout,
            metrics: self.server.metrics.clone(),
        }
    }
}
