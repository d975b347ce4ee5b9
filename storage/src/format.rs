//! The FS30 on-disk format, byte for byte as ZODB's FileStorage writes it.
//!
//! | record | layout (all integers big-endian) |
//! |---|---|
//! | file header | `FS30` |
//! | transaction | `tid[8] tlen[8] status[1] ulen[2] dlen[2] elen[2] user desc ext data-records… tlen[8]` |
//! | data record | `oid[8] tid[8] prev[8] tloc[8] vlen[2]=0 plen[8]` then `plen` bytes, or an 8-byte backpointer when `plen == 0` |
//!
//! `tlen` counts from the start of the transaction through its data records, not the trailing copy, so
//! the next transaction starts at `pos + tlen + 8`. A backpointer of 0 means "no data" (a deletion or an
//! undone creation).

use super::error::{Result, StorageError};

/// File magic of a Python 3 FileStorage.
pub const MAGIC: &[u8; 4] = b"FS30";
/// Length of the fixed part of a transaction header.
pub const TXN_HEADER_LEN: u64 = 23;
/// Length of a data record header.
pub const DATA_HEADER_LEN: u64 = 42;
/// The u16 length fields cap user, description and extension at this many bytes.
pub const MAX_METADATA_LEN: usize = 65_535;

/// Transaction status byte.
pub mod status {
    /// Committed.
    pub const COMMITTED: u8 = b' ';
    /// Committed, then packed: no longer undoable.
    pub const PACKED: u8 = b'p';
    /// Checkpoint: written by vote, flipped by finish. A trailing one is an unfinished commit.
    pub const CHECKPOINT: u8 = b'c';
    /// Obsolete "undone" status; skipped by readers, as FileStorage does.
    pub const UNDONE: u8 = b'u';
}

/// The fixed part of a transaction header, plus the lengths of its variable part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    pub tid: u64,
    pub tlen: u64,
    pub status: u8,
    pub ulen: u16,
    pub dlen: u16,
    pub elen: u16,
}

impl TxnHeader {
    pub fn decode(buf: &[u8; TXN_HEADER_LEN as usize]) -> Self {
        TxnHeader {
            tid: be64(&buf[0..8]),
            tlen: be64(&buf[8..16]),
            status: buf[16],
            ulen: be16(&buf[17..19]),
            dlen: be16(&buf[19..21]),
            elen: be16(&buf[21..23]),
        }
    }

    pub fn encode(&self) -> [u8; TXN_HEADER_LEN as usize] {
        let mut b = [0u8; TXN_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&self.tid.to_be_bytes());
        b[8..16].copy_from_slice(&self.tlen.to_be_bytes());
        b[16] = self.status;
        b[17..19].copy_from_slice(&self.ulen.to_be_bytes());
        b[19..21].copy_from_slice(&self.dlen.to_be_bytes());
        b[21..23].copy_from_slice(&self.elen.to_be_bytes());
        b
    }

    /// Header length including user, description and extension.
    pub fn header_len(&self) -> u64 {
        TXN_HEADER_LEN + u64::from(self.ulen) + u64::from(self.dlen) + u64::from(self.elen)
    }
}

/// A data record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    pub oid: u64,
    pub tid: u64,
    /// Position of the previous revision of this object, 0 for none.
    pub prev: u64,
    /// Position of the enclosing transaction header.
    pub tloc: u64,
    pub vlen: u16,
    pub plen: u64,
}

impl DataHeader {
    pub fn decode(buf: &[u8; DATA_HEADER_LEN as usize]) -> Self {
        DataHeader {
            oid: be64(&buf[0..8]),
            tid: be64(&buf[8..16]),
            prev: be64(&buf[16..24]),
            tloc: be64(&buf[24..32]),
            vlen: be16(&buf[32..34]),
            plen: be64(&buf[34..42]),
        }
    }

    pub fn encode(&self) -> [u8; DATA_HEADER_LEN as usize] {
        let mut b = [0u8; DATA_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&self.oid.to_be_bytes());
        b[8..16].copy_from_slice(&self.tid.to_be_bytes());
        b[16..24].copy_from_slice(&self.prev.to_be_bytes());
        b[24..32].copy_from_slice(&self.tloc.to_be_bytes());
        b[32..34].copy_from_slice(&self.vlen.to_be_bytes());
        b[34..42].copy_from_slice(&self.plen.to_be_bytes());
        b
    }

    /// Full record length: header, then data or an 8-byte backpointer.
    pub fn record_len(&self) -> u64 {
        // Saturating: `plen` comes from the file and may be damaged.
        DATA_HEADER_LEN.saturating_add(if self.plen == 0 { 8 } else { self.plen })
    }
}

pub fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Checks the metadata limits before anything is written (FS30's u16 length fields).
pub fn check_metadata(user: &[u8], description: &[u8], extension: &[u8]) -> Result<()> {
    for (field, value) in [("user", user), ("description", description), ("extension", extension)] {
        if value.len() > MAX_METADATA_LEN {
            return Err(StorageError::MetadataTooLong { field, len: value.len() });
        }
    }
    Ok(())
}

/// Serializes a whole transaction record (header, metadata, data records, trailing length) into `out`.
pub struct TxnWriter<'a> {
    out: &'a mut Vec<u8>,
    start_pos: u64,
    start_len: usize,
}

impl<'a> TxnWriter<'a> {
    /// Starts a transaction record that will live at file position `pos`.
    pub fn begin(out: &'a mut Vec<u8>, pos: u64, tid: u64, status: u8, user: &[u8], desc: &[u8], ext: &[u8]) -> Self {
        let start_len = out.len();
        // Lengths were checked by `check_metadata`; truncation here would be a bug.
        let header = TxnHeader {
            tid,
            tlen: 0,
            status,
            ulen: u16::try_from(user.len()).expect("checked by check_metadata"),
            dlen: u16::try_from(desc.len()).expect("checked by check_metadata"),
            elen: u16::try_from(ext.len()).expect("checked by check_metadata"),
        };
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(user);
        out.extend_from_slice(desc);
        out.extend_from_slice(ext);
        TxnWriter { out, start_pos: pos, start_len }
    }

    /// File position the next data record will have.
    pub fn next_pos(&self) -> u64 {
        self.start_pos + (self.out.len() - self.start_len) as u64
    }

    /// Appends a data record with inline data (`Some`, non-empty) or a backpointer (`None` data).
    /// Returns the record's file position.
    pub fn data_record(&mut self, oid: u64, tid: u64, prev: u64, data: RecordBody<'_>) -> u64 {
        let pos = self.next_pos();
        let plen = match data {
            RecordBody::Data(d) => d.len() as u64,
            RecordBody::Back(_) => 0,
        };
        let header = DataHeader { oid, tid, prev, tloc: self.start_pos, vlen: 0, plen };
        self.out.extend_from_slice(&header.encode());
        match data {
            RecordBody::Data(d) => self.out.extend_from_slice(d),
            RecordBody::Back(back) => self.out.extend_from_slice(&back.to_be_bytes()),
        }
        pos
    }

    /// Writes the trailing length and patches the header's. Returns `tlen`.
    pub fn finish(self) -> u64 {
        let tlen = (self.out.len() - self.start_len) as u64;
        self.out[self.start_len + 8..self.start_len + 16].copy_from_slice(&tlen.to_be_bytes());
        self.out.extend_from_slice(&tlen.to_be_bytes());
        tlen
    }
}

/// The body of a data record.
#[derive(Debug, Clone, Copy)]
pub enum RecordBody<'a> {
    /// Inline data. Empty data must be written as `Back(0)` instead: FS30 cannot tell it apart.
    Data(&'a [u8]),
    /// A backpointer to an earlier record's position (0: no data).
    Back(u64),
}

impl<'a> RecordBody<'a> {
    /// Inline data, or a "no data" backpointer for empty data (as FileStorage stores `b''`).
    pub fn from_data(data: &'a [u8]) -> Self {
        if data.is_empty() { RecordBody::Back(0) } else { RecordBody::Data(data) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let t = TxnHeader { tid: 0x0102030405060708, tlen: 99, status: b' ', ulen: 1, dlen: 2, elen: 3 };
        assert_eq!(TxnHeader::decode(&t.encode()), t);
        assert_eq!(t.header_len(), 29);
        let d = DataHeader { oid: 7, tid: 8, prev: 9, tloc: 10, vlen: 0, plen: 0 };
        assert_eq!(DataHeader::decode(&d.encode()), d);
        assert_eq!(d.record_len(), 50);
    }

    #[test]
    fn txn_writer_lengths() {
        let mut out = Vec::new();
        let mut w = TxnWriter::begin(&mut out, 4, 1, b' ', b"u", b"d", b"");
        let p = w.data_record(0, 1, 0, RecordBody::Data(b"abc"));
        assert_eq!(p, 4 + 23 + 2);
        let tlen = w.finish();
        assert_eq!(tlen, 23 + 2 + 42 + 3);
        assert_eq!(out.len() as u64, tlen + 8);
        assert_eq!(be64(&out[8..16]), tlen);
        assert_eq!(be64(&out[out.len() - 8..]), tlen);
    }

    #[test]
    fn metadata_limits() {
        let big = vec![0u8; MAX_METADATA_LEN + 1];
        assert!(check_metadata(&big, b"", b"").is_err());
        assert!(check_metadata(b"", b"", &big[..MAX_METADATA_LEN]).is_ok());
    }
}
