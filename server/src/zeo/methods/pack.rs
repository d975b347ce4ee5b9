//! `pack(t, wait)`: garbage collection of revisions older than `t` (epoch seconds), on a blocking
//! thread. Allowed on read-only connections, as in ZEO.

use zeo_proto::pickle::Value;

use crate::storage::StorageError;
use crate::zeo::args::arg;
use crate::zeo::conn::Conn;
use crate::zeo::errors::storage_error;

impl Conn {
    /// With `wait` (the default) the reply comes when the pack is done; without, at once. Sent
    /// async (msgid 0), nothing is answered.
    pub(in crate::zeo) fn pack(&mut self, msgid: Value, args: &[Value]) {
        let h = self.host().clone();
        let t = arg(args, 0).and_then(Value::as_f64).unwrap_or(0.0);
        let wait = args.get(1).is_none_or(Value::is_truthy);
        let outbox = self.outbox.clone();
        let reply_to = (wait && msgid != Value::Int(0)).then_some(msgid.clone());
        if !wait && msgid != Value::Int(0) {
            self.reply(msgid, Ok(Value::None));
        }
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
                let pack_tid =
                    zeo_proto::timestamp::TimeStamp::from_unix(t).map_err(|e| StorageError::Pack(e.to_string()))?.raw();
                h.pack(&pack_tid).map(drop)
            })
            .await;
            if let Some(msgid) = reply_to {
                let r = match result {
                    Ok(Ok(())) => Ok(Value::None),
                    Ok(Err(e)) => Err(storage_error(&e)),
                    Err(e) => Err(storage_error(&StorageError::Pack(e.to_string()))),
                };
                outbox.reply(msgid, r);
            }
        });
    }
}
