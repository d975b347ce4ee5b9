//! Joining a storage (`register`) and what a client asks about it: `get_info`, `lastTransaction`,
//! `getInvalidations` (cache verification at connect), `server_status`, `ping`, `set_client_label`.

use zeo_proto::pickle::Value;

use crate::zeo::args::{arg, bytes_list, id_arg};
use crate::zeo::conn::Conn;
use crate::zeo::errors::{ErrorReply, read_only, value_error};

impl Conn {
    pub(in crate::zeo) fn register(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        if self.host.is_some() {
            return Err(value_error("duplicate register() call"));
        }
        let name = match arg(args, 0) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => "1".to_string(),
        };
        let Some(host) = self.server.hosts.get(&name).cloned() else {
            tracing::warn!(peer = %self.outbox.peer, storage = %name, "register for an unknown storage");
            return Err(value_error(&format!("unknown storage: {name}")));
        };
        let wants_read_only = arg(args, 1).is_some_and(Value::is_truthy);
        if !wants_read_only && (self.server.opts.read_only || host.is_read_only() || self.access_read_only) {
            return Err(read_only());
        }
        self.read_only = wants_read_only || self.server.opts.read_only || host.is_read_only() || self.access_read_only;
        let last = host.register(self.id, self.outbox.clone());
        tracing::debug!(peer = %self.outbox.peer, storage = %name, read_only = self.read_only, "registered");
        self.host = Some(host);
        Ok(Value::Bytes(last.to_vec()))
    }

    pub(in crate::zeo) fn get_info(&mut self, _args: &[Value]) -> Result<Value, ErrorReply> {
        let h = self.host();
        let mut interfaces = Vec::new();
        let iface = |name: &str| Value::Tuple(vec![Value::Str("ZODB.interfaces".into()), Value::Str(name.into())]);
        if h.blobs.is_some() {
            interfaces.push(iface("IBlobStorageRestoreable"));
            interfaces.push(iface("IBlobStorage"));
        }
        for name in [
            "IStorageRestoreable",
            "IStorageIteration",
            "IStorageUndoable",
            "IStorageCurrentRecordIteration",
            "IExternalGC",
            "IStorage",
        ] {
            interfaces.push(iface(name));
        }
        interfaces.push(Value::Tuple(vec![Value::Str("zope.interface".into()), Value::Str("Interface".into())]));
        let s = |k: &str| Value::Str(k.into());
        Ok(Value::Dict(vec![
            (s("length"), Value::Int(i64::try_from(h.fs.len()).unwrap_or(i64::MAX))),
            (s("size"), Value::Int(i64::try_from(h.fs.size()).unwrap_or(i64::MAX))),
            (s("name"), Value::Str(h.fs.path().display().to_string())),
            (s("supportsUndo"), Value::Bool(true)),
            (s("supports_record_iternext"), Value::Bool(true)),
            (s("interfaces"), Value::Tuple(interfaces)),
        ]))
    }

    pub(in crate::zeo) fn last_transaction(&mut self, _args: &[Value]) -> Result<Value, ErrorReply> {
        Ok(Value::Bytes(self.host().last_tid().to_vec()))
    }

    pub(in crate::zeo) fn get_invalidations(&mut self, args: &[Value]) -> Result<Value, ErrorReply> {
        id_arg(arg(args, 0), "tid").map(|tid| match self.host().get_invalidations(&tid) {
            Some((t, oids)) => Value::Tuple(vec![Value::Bytes(t.to_vec()), bytes_list(oids)]),
            None => Value::None,
        })
    }

    pub(in crate::zeo) fn server_status(&mut self, _args: &[Value]) -> Result<Value, ErrorReply> {
        Ok(self.server.status_value(self.host()))
    }

    pub(in crate::zeo) fn ping(&mut self, _args: &[Value]) -> Result<Value, ErrorReply> {
        Ok(Value::None)
    }

    pub(in crate::zeo) fn set_client_label(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        tracing::debug!(peer = %self.outbox.peer, label = ?arg(args, 0), "client label");
        Ok(())
    }
}
