//! The replication stream's wire format (documented in docs/REPLICATION.md).
//!
//! Every frame is `u32 length | u8 kind | u64 epoch | payload`, big-endian, the length covering
//! kind, epoch and payload. Control messages carry JSON payloads (rare, and readable in a packet
//! capture); transactions and data are binary. The epoch in every frame is the sender's, so a
//! stale peer is recognised on any message, not only at the handshake.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::LinkError;
use super::history::Digest;
use crate::storage::{Oid, Tid};

/// The protocol version in `Hello`.
pub const VERSION: u32 = 1;
/// Largest frame accepted: a transaction travels in one frame, so this bounds transaction size.
pub const MAX_FRAME: u32 = 1 << 30;
/// Largest frame a primary reads from a standby, which only sends `Hello`, `Probe` and `Ack` (a
/// few hundred bytes): the link's pre-auth frame cap, and its cap after authentication too.
pub const MAX_STANDBY_FRAME: u32 = 64 << 10;
/// Blob and snapshot data travel in chunks of this size.
pub const CHUNK: usize = 1 << 20;

/// What a standby says first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// The standby's name (for `/status`, metrics, out-of-sync marks).
    pub name: String,
    /// The storage this stream is for.
    pub storage: String,
    /// The standby's last transaction and its chain digest (hex).
    pub last_tid: String,
    pub digest: String,
    /// The standby is empty and wants a copy of the file first.
    pub want_snapshot: bool,
}

/// The primary accepts: transactions after `start_after` follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub primary_last_tid: String,
    /// Whether the primary has this standby marked out of sync.
    pub out_of_sync: bool,
    /// Whether the primary waits for standby acknowledgements (sync mode).
    pub sync: bool,
}

/// Why the primary refuses a standby (the connection is closed after it, except for `Diverged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseCode {
    /// This server is not a primary (now).
    NotPrimary,
    /// The peer's epoch is stale.
    Epoch,
    /// The standby's last transaction is not in the primary's history: probe for the common point.
    Diverged,
    /// The history needed was packed away (or the standby was): a full re-seed is needed.
    Reseed,
    /// Anything else (unknown storage, bad version).
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refuse {
    pub code: RefuseCode,
    pub reason: String,
}

/// The primary's view of this standby, sent on changes and periodically (lag, liveness).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrimaryStatus {
    pub primary_last_tid: String,
    pub out_of_sync: bool,
    pub sync: bool,
}

/// One record as shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedRecord {
    pub oid: Oid,
    pub tid: Tid,
    pub data: Option<Vec<u8>>,
    /// The transaction a backpointer pointed into, so the standby can write one too.
    pub data_txn: Option<Tid>,
    /// A blob for (oid, tid) was sent before this transaction.
    pub blob: bool,
}

/// One transaction as shipped, with the primary's chain digest after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedTxn {
    pub tid: Tid,
    pub chain: Digest,
    pub status: u8,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    pub extension: Vec<u8>,
    pub records: Vec<ShippedRecord>,
}

/// A message of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Hello(Hello),
    /// "Is `(tid, digest)` in your history?" (binary search for the common point).
    Probe {
        tid: Tid,
        digest: Digest,
    },
    /// Transaction `tid` (and all before it) is durable here.
    Ack {
        tid: Tid,
    },
    Welcome(Welcome),
    Refuse(Refuse),
    ProbeReply {
        matches: bool,
    },
    Txn(Box<ShippedTxn>),
    /// A chunk of the blob of (oid, tid); `last` closes it.
    Blob {
        oid: Oid,
        tid: Tid,
        last: bool,
        data: Vec<u8>,
    },
    /// A copy of the primary's file follows: `size` bytes through transaction `last_tid`.
    SnapshotBegin {
        size: u64,
        last_tid: Tid,
    },
    SnapshotData(Vec<u8>),
    /// End of the copy, with the history digests through `last_tid`.
    SnapshotEnd {
        chain: Vec<u8>,
    },
    Status(PrimaryStatus),
    /// The primary packed to this time; every transaction up to it was sent before.
    Pack {
        pack_tid: Tid,
    },
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const PROBE: u8 = 2;
    pub const ACK: u8 = 3;
    pub const WELCOME: u8 = 10;
    pub const REFUSE: u8 = 11;
    pub const PROBE_REPLY: u8 = 12;
    pub const TXN: u8 = 13;
    pub const BLOB: u8 = 14;
    pub const SNAPSHOT_BEGIN: u8 = 15;
    pub const SNAPSHOT_DATA: u8 = 16;
    pub const SNAPSHOT_END: u8 = 17;
    pub const STATUS: u8 = 18;
    pub const PACK: u8 = 19;
}

fn bad(why: impl Into<String>) -> LinkError {
    LinkError::BadFrame(why.into())
}

/// Encodes a message as one frame.
pub fn encode(msg: &Msg, epoch: u64) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    let json = |out: &mut Vec<u8>, k: u8, v: &dyn erased::Json| {
        out.push(k);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&v.to_json());
    };
    match msg {
        Msg::Hello(h) => json(&mut out, kind::HELLO, h),
        Msg::Welcome(w) => json(&mut out, kind::WELCOME, w),
        Msg::Refuse(r) => json(&mut out, kind::REFUSE, r),
        Msg::Status(s) => json(&mut out, kind::STATUS, s),
        Msg::Probe { tid, digest } => {
            head(&mut out, kind::PROBE, epoch);
            out.extend_from_slice(tid);
            out.extend_from_slice(digest);
        }
        Msg::Ack { tid } => {
            head(&mut out, kind::ACK, epoch);
            out.extend_from_slice(tid);
        }
        Msg::ProbeReply { matches } => {
            head(&mut out, kind::PROBE_REPLY, epoch);
            out.push(u8::from(*matches));
        }
        Msg::Txn(t) => {
            head(&mut out, kind::TXN, epoch);
            out.extend_from_slice(&t.tid);
            out.extend_from_slice(&t.chain);
            out.push(t.status);
            for part in [&t.user, &t.description, &t.extension] {
                bytes(&mut out, part);
            }
            out.extend_from_slice(&(t.records.len() as u32).to_be_bytes());
            for r in &t.records {
                out.extend_from_slice(&r.oid);
                out.extend_from_slice(&r.tid);
                let flags = u8::from(r.data.is_some()) | u8::from(r.data_txn.is_some()) << 1 | u8::from(r.blob) << 2;
                out.push(flags);
                if let Some(d) = &r.data {
                    bytes(&mut out, d);
                }
                if let Some(t) = &r.data_txn {
                    out.extend_from_slice(t);
                }
            }
        }
        Msg::Blob { oid, tid, last, data } => {
            head(&mut out, kind::BLOB, epoch);
            out.extend_from_slice(oid);
            out.extend_from_slice(tid);
            out.push(u8::from(*last));
            out.extend_from_slice(data);
        }
        Msg::SnapshotBegin { size, last_tid } => {
            head(&mut out, kind::SNAPSHOT_BEGIN, epoch);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(last_tid);
        }
        Msg::SnapshotData(d) => {
            head(&mut out, kind::SNAPSHOT_DATA, epoch);
            out.extend_from_slice(d);
        }
        Msg::Pack { pack_tid } => {
            head(&mut out, kind::PACK, epoch);
            out.extend_from_slice(pack_tid);
        }
        Msg::SnapshotEnd { chain } => {
            head(&mut out, kind::SNAPSHOT_END, epoch);
            out.extend_from_slice(chain);
        }
    }
    let len = u32::try_from(out.len() - 4).expect("frames are bounded by MAX_FRAME");
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

fn head(out: &mut Vec<u8>, k: u8, epoch: u64) {
    out.push(k);
    out.extend_from_slice(&epoch.to_be_bytes());
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// JSON encoding without generics in `encode`'s closure.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("control messages serialize")
        }
    }
}

/// Reads a payload field by field, failing on truncation.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkError> {
        if self.b.len() < n {
            return Err(bad("truncated payload"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], LinkError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn u8(&mut self) -> Result<u8, LinkError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, LinkError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, LinkError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.b).to_vec()
    }
    fn done(&self) -> Result<(), LinkError> {
        if self.b.is_empty() { Ok(()) } else { Err(bad("trailing bytes")) }
    }
}

/// Decodes one frame body (after the length): `(epoch, message)`.
pub fn decode(body: &[u8]) -> Result<(u64, Msg), LinkError> {
    let mut r = Reader { b: body };
    let k = r.u8()?;
    let epoch = u64::from_be_bytes(r.arr()?);
    fn json<T: serde::de::DeserializeOwned>(r: &mut Reader<'_>) -> Result<T, LinkError> {
        serde_json::from_slice(&r.rest()).map_err(|e| bad(format!("bad control message: {e}")))
    }
    let msg = match k {
        kind::HELLO => Msg::Hello(json(&mut r)?),
        kind::WELCOME => Msg::Welcome(json(&mut r)?),
        kind::REFUSE => Msg::Refuse(json(&mut r)?),
        kind::STATUS => Msg::Status(json(&mut r)?),
        kind::PROBE => Msg::Probe { tid: r.arr()?, digest: r.arr()? },
        kind::ACK => Msg::Ack { tid: r.arr()? },
        kind::PROBE_REPLY => Msg::ProbeReply { matches: r.u8()? != 0 },
        kind::TXN => {
            let tid = r.arr()?;
            let chain = r.arr()?;
            let status = r.u8()?;
            let (user, description, extension) = (r.bytes()?, r.bytes()?, r.bytes()?);
            let n = r.u32()? as usize;
            // Each record takes at least 17 bytes: a count larger than that is a lie.
            if n > r.b.len() / 17 {
                return Err(bad("record count exceeds the frame"));
            }
            let mut records = Vec::with_capacity(n);
            for _ in 0..n {
                let oid = r.arr()?;
                let rtid = r.arr()?;
                let flags = r.u8()?;
                let data = if flags & 1 != 0 { Some(r.bytes()?) } else { None };
                let data_txn = if flags & 2 != 0 { Some(r.arr()?) } else { None };
                records.push(ShippedRecord { oid, tid: rtid, data, data_txn, blob: flags & 4 != 0 });
            }
            r.done()?;
            Msg::Txn(Box::new(ShippedTxn { tid, chain, status, user, description, extension, records }))
        }
        kind::BLOB => Msg::Blob { oid: r.arr()?, tid: r.arr()?, last: r.u8()? != 0, data: r.rest() },
        kind::SNAPSHOT_BEGIN => {
            let size = u64::from_be_bytes(r.arr()?);
            let last_tid = r.arr()?;
            r.done()?;
            Msg::SnapshotBegin { size, last_tid }
        }
        kind::SNAPSHOT_DATA => Msg::SnapshotData(r.rest()),
        kind::SNAPSHOT_END => Msg::SnapshotEnd { chain: r.rest() },
        kind::PACK => Msg::Pack { pack_tid: r.arr()? },
        other => return Err(bad(format!("unknown message kind {other}"))),
    };
    Ok((epoch, msg))
}

/// Reads one frame.
pub async fn read<R: AsyncRead + Unpin>(rd: &mut R) -> Result<(u64, Msg), LinkError> {
    read_max(rd, MAX_FRAME).await
}

/// Reads one frame of at most `max` bytes; a larger length is refused before anything is buffered.
pub async fn read_max<R: AsyncRead + Unpin>(rd: &mut R, max: u32) -> Result<(u64, Msg), LinkError> {
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(LinkError::FrameTooLarge { len, max });
    }
    if len < 9 {
        return Err(bad(format!("frame length {len}")));
    }
    let mut body = vec![0u8; len as usize];
    rd.read_exact(&mut body).await?;
    decode(&body)
}

/// Writes one frame.
pub async fn write<W: AsyncWrite + Unpin>(wr: &mut W, msg: &Msg, epoch: u64) -> Result<(), LinkError> {
    wr.write_all(&encode(msg, epoch)).await?;
    Ok(())
}

/// Parses a 16-hex-digit tid.
pub fn parse_tid(s: &str) -> Result<Tid, LinkError> {
    let v = hex::decode(s).map_err(|e| bad(format!("bad tid {s:?}: {e}")))?;
    v.try_into().map_err(|_| bad(format!("bad tid {s:?}: not 8 bytes")))
}

/// Parses a 64-hex-digit digest.
pub fn parse_digest(s: &str) -> Result<Digest, LinkError> {
    let v = hex::decode(s).map_err(|e| bad(format!("bad digest: {e}")))?;
    v.try_into().map_err(|_| bad("bad digest: not 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Msg) {
        let frame = encode(&m, 42);
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode(&frame[4..]).unwrap(), (42, m));
    }

    #[test]
    fn every_message_roundtrips() {
        roundtrip(Msg::Hello(Hello {
            version: VERSION,
            name: "b".into(),
            storage: "1".into(),
            last_tid: "00".repeat(8),
            digest: "00".repeat(32),
            want_snapshot: true,
        }));
        roundtrip(Msg::Welcome(Welcome { primary_last_tid: "ab".repeat(8), out_of_sync: true, sync: false }));
        roundtrip(Msg::Refuse(Refuse { code: RefuseCode::Diverged, reason: "x".into() }));
        roundtrip(Msg::Status(PrimaryStatus { primary_last_tid: "01".repeat(8), out_of_sync: false, sync: true }));
        roundtrip(Msg::Probe { tid: [1; 8], digest: [2; 32] });
        roundtrip(Msg::Ack { tid: [3; 8] });
        roundtrip(Msg::ProbeReply { matches: true });
        roundtrip(Msg::Txn(Box::new(ShippedTxn {
            tid: [4; 8],
            chain: [5; 32],
            status: b' ',
            user: b"u".to_vec(),
            description: vec![],
            extension: b"ext".to_vec(),
            records: vec![
                ShippedRecord { oid: [6; 8], tid: [4; 8], data: Some(b"data".to_vec()), data_txn: None, blob: true },
                ShippedRecord { oid: [7; 8], tid: [4; 8], data: None, data_txn: Some([1; 8]), blob: false },
            ],
        })));
        roundtrip(Msg::Blob { oid: [1; 8], tid: [2; 8], last: true, data: b"blob".to_vec() });
        roundtrip(Msg::SnapshotBegin { size: 99, last_tid: [9; 8] });
        roundtrip(Msg::SnapshotData(b"FS30".to_vec()));
        roundtrip(Msg::SnapshotEnd { chain: b"ZRSCHN01".to_vec() });
        roundtrip(Msg::Pack { pack_tid: [8; 8] });
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let frame = encode(
            &Msg::Txn(Box::new(ShippedTxn {
                tid: [4; 8],
                chain: [5; 32],
                status: b' ',
                user: vec![],
                description: vec![],
                extension: vec![],
                records: vec![ShippedRecord {
                    oid: [6; 8],
                    tid: [4; 8],
                    data: Some(vec![1; 30]),
                    data_txn: None,
                    blob: false,
                }],
            })),
            1,
        );
        for cut in 4..frame.len() - 1 {
            assert!(decode(&frame[4..cut]).is_err(), "truncated at {cut}");
        }
        let mut lying = frame[4..].to_vec();
        lying[9 + 8 + 32 + 1 + 12..9 + 8 + 32 + 1 + 16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&lying).is_err());
        assert!(decode(&[99, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
