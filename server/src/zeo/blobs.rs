//! The server-side blob directory, in ZODB's "bushy" layout so that a blob directory is
//! interchangeable with Python ZEO's: `<dir>/.layout` holds `bushy`, committed blobs live at
//! `<dir>/0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x03/0x03f58e0008888888.blob` (one level per oid byte,
//! the file named by the tid as ZODB's `tid_repr` writes it), uploads are staged in `<dir>/tmp`.
//!
//! And the blob methods clients call: `sendBlob` (the server streams a committed blob back in
//! `receiveBlob*` calls), `storeBlobStart`/`storeBlobChunk`/`storeBlobEnd` (an upload staged here
//! and committed with its transaction), `storeBlobShared` (refused).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use zeo_proto::message::Message;
use zeo_proto::pickle::Value;

use super::args::{arg, bytes_arg, id_arg, serial_arg};
use super::conn::Conn;
use super::errors::{ErrorReply, exception, storage_error, transaction_error};
use crate::storage::{Op, StorageError};

/// Blob data goes to clients in chunks of this size, as ZEO sends them.
const BLOB_CHUNK: usize = 59_000;

/// A blob directory.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
}

/// ZODB's `oid_repr`/`tid_repr`: `0x` and the hex digits without leading zeros (an even number of
/// them; `0x00` for zero).
pub fn id_repr(id: &[u8; 8]) -> String {
    let hex = hex::encode(id);
    let trimmed = hex.trim_start_matches('0');
    let even = if trimmed.is_empty() {
        "00".to_string()
    } else if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed.to_string()
    };
    format!("0x{even}")
}

impl BlobDir {
    /// Opens (creating if needed) a blob directory; refuses a layout other than bushy.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root.join("tmp"))?;
        let marker = root.join(".layout");
        match fs::read_to_string(&marker) {
            Ok(layout) if layout.trim() == "bushy" => {}
            Ok(layout) => {
                return Err(std::io::Error::other(format!(
                    "{}: blob layout {:?} is not supported (only \"bushy\", ZEO's default)",
                    root.display(),
                    layout.trim()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::write(&marker, "bushy")?,
            Err(e) => return Err(e),
        }
        Ok(BlobDir { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of an object's blobs.
    pub fn oid_dir(&self, oid: &[u8; 8]) -> PathBuf {
        let mut p = self.root.clone();
        for b in oid {
            p.push(format!("0x{b:02x}"));
        }
        p
    }

    /// File of a committed blob revision.
    pub fn blob_path(&self, oid: &[u8; 8], tid: &[u8; 8]) -> PathBuf {
        self.oid_dir(oid).join(format!("{}.blob", id_repr(tid)))
    }

    /// A new, empty staging file for an upload.
    pub fn temp_file(&self) -> std::io::Result<(PathBuf, fs::File)> {
        for _ in 0..100 {
            let name = format!("upload-{:016x}.tmp", rand_u64());
            let path = self.root.join("tmp").join(name);
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("cannot create a blob staging file"))
    }

    /// Moves a staged upload into place as the blob of (oid, tid), durably: the file is fsynced
    /// before the rename, the directory after.
    pub fn commit(&self, staged: &Path, oid: &[u8; 8], tid: &[u8; 8]) -> std::io::Result<()> {
        let dir = self.oid_dir(oid);
        fs::create_dir_all(&dir)?;
        fs::File::open(staged)?.sync_all()?;
        fs::rename(staged, self.blob_path(oid, tid))?;
        fs::File::open(&dir)?.sync_all()
    }

    /// Removes the blob of one revision (after pack dropped it), and the object's directory when it
    /// is left empty.
    pub fn remove(&self, oid: &[u8; 8], tid: &[u8; 8]) {
        let _ = fs::remove_file(self.blob_path(oid, tid));
        let _ = fs::remove_dir(self.oid_dir(oid));
    }
}

/// A committed blob file: (oid, tid, path).
pub type BlobFile = ([u8; 8], [u8; 8], PathBuf);

impl BlobDir {
    /// Every committed blob: `(oid, tid, path)`, in no particular order (for seeding a standby).
    pub fn list(&self) -> std::io::Result<Vec<BlobFile>> {
        let mut out = Vec::new();
        walk(&self.root, &mut Vec::new(), &mut out)?;
        Ok(out)
    }
}

/// Descends the one-directory-per-oid-byte tree; `oid` holds the bytes of the path so far.
fn walk(dir: &Path, oid: &mut Vec<u8>, out: &mut Vec<BlobFile>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if oid.len() < 8 {
            let byte = name.strip_prefix("0x").filter(|h| h.len() == 2).and_then(|h| u8::from_str_radix(h, 16).ok());
            if let (Some(b), true) = (byte, entry.file_type()?.is_dir()) {
                oid.push(b);
                walk(&entry.path(), oid, out)?;
                oid.pop();
            }
        } else if let Some(tid) = name.strip_suffix(".blob").and_then(parse_repr) {
            let o: [u8; 8] = oid.as_slice().try_into().expect("eight levels");
            out.push((o, tid, entry.path()));
        }
    }
    Ok(())
}

/// Inverse of `id_repr`.
fn parse_repr(s: &str) -> Option<[u8; 8]> {
    let n = u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()?;
    Some(zeo_proto::p64(n))
}

/// Appends to a staging file.
pub fn append(file: &mut fs::File, chunk: &[u8]) -> std::io::Result<()> {
    file.write_all(chunk)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

// ---- the blob methods ----------------------------------------------------------------------

impl Conn {
    /// Streams a blob (`receiveBlobStart`, chunks, `receiveBlobStop`), then answers None.
    pub(super) fn send_blob(&mut self, msgid: Value, args: &[Value]) {
        let h = self.host().clone();
        let (oid, serial) = match (id_arg(arg(args, 0), "oid"), id_arg(arg(args, 1), "serial")) {
            (Ok(o), Ok(s)) => (o, s),
            (Err(e), _) | (_, Err(e)) => return self.reply(msgid, Err(e)),
        };
        let Some(dir) = h.blobs.clone() else {
            return self.reply(msgid, Err(storage_error(&StorageError::PosKey { oid })));
        };
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let path = dir.blob_path(&oid, &serial);
            let data = match tokio::fs::read(&path).await {
                Ok(d) => d,
                Err(_) => {
                    outbox.reply(msgid, Err(storage_error(&StorageError::PosKey { oid })));
                    return;
                }
            };
            let call = |method: &str, mut args: Vec<Value>| {
                let mut a = vec![Value::Bytes(oid.to_vec()), Value::Bytes(serial.to_vec())];
                a.append(&mut args);
                Message::Call { msgid: Value::Int(0), is_async: true, method: method.into(), args: a }
            };
            outbox.send(&call("receiveBlobStart", vec![]));
            for chunk in data.chunks(BLOB_CHUNK) {
                if !outbox.send(&call("receiveBlobChunk", vec![Value::Bytes(chunk.to_vec())])) {
                    return;
                }
            }
            outbox.send(&call("receiveBlobStop", vec![]));
            outbox.reply(msgid, Ok(Value::None));
        });
    }

    pub(super) fn store_blob_start(&mut self, _args: &[Value]) -> Result<(), ErrorReply> {
        let dir =
            self.host().blobs.clone().ok_or_else(|| {
                storage_error(&StorageError::Transaction("this storage has no blob directory".into()))
            })?;
        let staged = dir.temp_file().map_err(|e| exception("builtins.OSError", vec![Value::Str(e.to_string())]))?;
        if let Some((old, _)) = self.upload.replace(staged) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }

    pub(super) fn store_blob_chunk(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        let chunk = bytes_arg(arg(args, 0));
        let (_, file) =
            self.upload.as_mut().ok_or_else(|| transaction_error("storeBlobChunk without storeBlobStart"))?;
        append(file, &chunk).map_err(|e| exception("builtins.OSError", vec![Value::Str(e.to_string())]))
    }

    pub(super) fn store_blob_end(&mut self, args: &[Value]) -> Result<(), ErrorReply> {
        let oid = id_arg(arg(args, 0), "oid")?;
        let serial = serial_arg(args.get(1))?;
        let data = bytes_arg(arg(args, 2));
        let (path, file) =
            self.upload.take().ok_or_else(|| transaction_error("storeBlobEnd without storeBlobStart"))?;
        drop(file);
        self.with_txn(arg(args, 3), |t| {
            t.blobs.push((oid, path));
            // Clients send a plain storea of the same record first; storing it twice would
            // write two records (and make the transaction impossible to undo).
            let already = t.engine.as_ref().is_some_and(|e| {
                e.ops().iter().any(|op| matches!(op, Op::Store { oid: o, data: d, .. } if *o == oid && *d == data))
            });
            if already {
                return Ok(());
            }
            t.invalidate.push(oid);
            t.engine.as_mut().map_or(Ok(()), |e| e.store(oid, serial, data))
        })
    }

    pub(super) fn store_blob_shared(&mut self, _args: &[Value]) -> Result<(), ErrorReply> {
        Err(storage_error(&StorageError::Transaction(
            "shared blob directories are not supported; use a client blob cache".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_zodb_bushy_layout() {
        assert_eq!(id_repr(&[0, 0, 0, 0, 0, 0, 0, 3]), "0x03");
        assert_eq!(id_repr(&[0; 8]), "0x00");
        assert_eq!(id_repr(&[0x03, 0xf5, 0x8e, 0, 0x08, 0x88, 0x88, 0x88]), "0x03f58e0008888888");
        let dir = tempfile::tempdir().unwrap();
        let b = BlobDir::open(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join(".layout")).unwrap(), "bushy");
        let p = b.blob_path(&[0, 0, 0, 0, 0, 0, 0, 3], &[0x03, 0xf5, 0x8e, 0, 0x08, 0x88, 0x88, 0x88]);
        assert!(p.ends_with("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x03/0x03f58e0008888888.blob"), "{}", p.display());
        let (tmp, mut f) = b.temp_file().unwrap();
        append(&mut f, b"hello").unwrap();
        b.commit(&tmp, &[0, 0, 0, 0, 0, 0, 0, 3], &[1; 8]).unwrap();
        assert_eq!(fs::read(b.blob_path(&[0, 0, 0, 0, 0, 0, 0, 3], &[1; 8])).unwrap(), b"hello");
        let listed = b.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0, listed[0].1), ([0, 0, 0, 0, 0, 0, 0, 3], [1; 8]));
        fs::write(dir.path().join(".layout"), "lawn").unwrap();
        assert!(BlobDir::open(dir.path()).is_err());
    }
}
