//! The storage's history as clients browse it: `history(oid, size)`, `undoLog(first, last)` and
//! `undoInfo(first, last, specification)`.

use zeo_proto::pickle::Value;

use crate::storage::UndoEntry;
use crate::zeo::args::{arg, id_arg, int_arg};
use crate::zeo::conn::Conn;
use crate::zeo::convert::{history_dict, matches_spec, undo_dict};
use crate::zeo::errors::{ErrorReply, storage_error};

impl Conn {
    pub(in crate::zeo) fn history(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        id_arg(arg(args, 0), "oid").and_then(|oid| {
            let size = usize::try_from(int_arg(args, 1, 1).max(1)).unwrap_or(1);
            self.host()
                .fs
                .history(&oid, size)
                .map(|h| Value::List(h.iter().map(history_dict).collect()))
                .map_err(|e| storage_error(&e))
        })
    }

    pub(in crate::zeo) fn undo_log(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        self.undo_entries(int_arg(args, 0, 0), int_arg(args, 1, -20), None)
    }

    pub(in crate::zeo) fn undo_info(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        let spec = match arg(args, 2) {
            Some(Value::Dict(d)) => Some(d.clone()),
            _ => None,
        };
        self.undo_entries(int_arg(args, 0, 0), int_arg(args, 1, -20), spec)
    }

    fn undo_entries(&self, first: i64, last: i64, spec: Option<Vec<(Value, Value)>>) -> Result<Value, ErrorReply> {
        // The specification filters before first/last count, as in FileStorage.
        let filter = spec.map(|spec| move |u: &UndoEntry| matches_spec(&undo_dict(u), &spec));
        let filter = filter.as_ref().map(|f| f as &dyn Fn(&UndoEntry) -> bool);
        let entries = self.host().fs.undo_log(first, last, filter).map_err(|e| storage_error(&e))?;
        Ok(Value::List(entries.iter().map(undo_dict).collect()))
    }
}
