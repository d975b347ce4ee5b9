//! Reading object revisions: `loadBefore` (the current revision is `loadBefore(oid, MAXTID)`),
//! `loadSerial`, `getTid`.

use std::sync::atomic::Ordering;

use zeo_proto::pickle::Value;

use crate::zeo::args::{arg, id_arg};
use crate::zeo::conn::Conn;
use crate::zeo::errors::{ErrorReply, storage_error};

impl Conn {
    /// `loadBefore(oid, tid)`: the revision current before `tid`, with the tids that start and end
    /// it; None when the object did not exist then.
    pub(in crate::zeo) fn load_before(&mut self, msgid: Value, args: &[Value]) {
        let h = self.host().clone();
        h.stats.loads.fetch_add(1, Ordering::Relaxed);
        h.metrics.loads.inc();
        let (oid, tid) = match (id_arg(arg(args, 0), "oid"), id_arg(arg(args, 1), "tid")) {
            (Ok(o), Ok(t)) => (o, t),
            (Err(e), _) | (_, Err(e)) => return self.reply(msgid, Err(e)),
        };
        // Compute and queue the reply under the publication read lock: a reply computed before a
        // commit is queued before that commit's invalidation (see host.rs).
        let _ordered = h.read();
        let result = match h.fs.load_before(&oid, &tid) {
            Ok(Some(lb)) => Ok(Value::Tuple(vec![
                Value::Bytes(lb.data),
                Value::Bytes(lb.start.to_vec()),
                lb.end.map_or(Value::None, |e| Value::Bytes(e.to_vec())),
            ])),
            Ok(None) => Ok(Value::None),
            Err(e) => Err(storage_error(&e)),
        };
        self.reply(msgid, result);
    }

    pub(in crate::zeo) fn load_serial(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        let oid = id_arg(arg(args, 0), "oid")?;
        let tid = id_arg(arg(args, 1), "tid")?;
        self.host().fs.load_serial(&oid, &tid).map(Value::Bytes).map_err(|e| storage_error(&e))
    }

    pub(in crate::zeo) fn get_tid(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        id_arg(arg(args, 0), "oid").and_then(|oid| {
            self.host().fs.get_tid(&oid).map(|t| Value::Bytes(t.to_vec())).map_err(|e| storage_error(&e))
        })
    }
}
