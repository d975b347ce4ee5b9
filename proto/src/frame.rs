//! Length-prefixed framing: the layer below every ZEO message.
//!
//! A ZEO stream is a sequence of frames, each a 4-byte unsigned big-endian payload length and
//! then that many payload bytes (ZEO's `SizedMessageAsyncConnection` / `smp.py`). There are no
//! flags and no checksum. The protocol itself sets no maximum size, so [`FrameDecoder`] imposes
//! one: without it a peer could make us buffer up to 4 GiB by sending four bytes.
//!
//! [`FrameDecoder::decode`] works on a plain `Vec<u8>` (simple callers, tests) or a
//! [`bytes::BytesMut`] (a `tokio_util` codec, where taking a frame off the front is cheap); the
//! [`FrameBuffer`] trait is what both provide.

use bytes::{Buf, BytesMut};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default largest payload [`FrameDecoder`] accepts: 64 MiB. Large object records travel in one
/// `storea` frame, so this must exceed the largest record a deployment stores; blobs are sent in
/// 59,000-byte chunks and never come near it.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// The largest payload a 4-byte length can announce.
pub const MAX_ENCODABLE: usize = u32::MAX as usize;

/// Why a frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A header announced more than the decoder's limit. Reported as soon as the header is in
    /// the buffer, before any payload is buffered; the caller should close the connection, as
    /// the stream cannot be resynchronised.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced payload length.
        len: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// [`encode_frame`] was given a payload that a 4-byte length cannot describe.
    #[error("payload of {len} bytes does not fit a 4-byte frame length")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
    },
}

/// A growable receive buffer that frames can be taken off the front of.
///
/// Implemented for `Vec<u8>` (taking a frame moves the remaining bytes down) and
/// [`BytesMut`] (taking a frame is O(1)); stream readers should prefer the latter.
pub trait FrameBuffer {
    /// The buffered bytes.
    fn bytes(&self) -> &[u8];
    /// Removes the first `skip + len` bytes and returns the last `len` of them.
    /// Callers guarantee `skip + len <= self.bytes().len()`.
    fn take(&mut self, skip: usize, len: usize) -> Vec<u8>;
    /// Makes room for at least `additional` more bytes, so that a reader filling the buffer
    /// with a known-size frame does not reallocate repeatedly.
    fn reserve_more(&mut self, additional: usize);
}

impl FrameBuffer for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn take(&mut self, skip: usize, len: usize) -> Vec<u8> {
        let end = skip.saturating_add(len).min(self.len());
        let payload = self.get(skip.min(end)..end).map(<[u8]>::to_vec).unwrap_or_default();
        self.drain(..end);
        payload
    }

    fn reserve_more(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

impl FrameBuffer for BytesMut {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn take(&mut self, skip: usize, len: usize) -> Vec<u8> {
        let skip = skip.min(self.len());
        self.advance(skip);
        let len = len.min(self.len());
        Vec::from(self.split_to(len))
    }

    fn reserve_more(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// Splits a byte stream into frames, refusing frames above a size limit.
///
/// Stateless apart from the limit: all progress lives in the caller's buffer, so the decoder
/// can be used from any read loop (or a `tokio_util::codec::Decoder` wrapper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame: usize,
}

/// A decoder with [`DEFAULT_MAX_FRAME`].
impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder that accepts payloads of at most `max_frame` bytes.
    pub const fn new(max_frame: usize) -> Self {
        FrameDecoder { max_frame }
    }

    /// The largest payload accepted.
    pub const fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Looks at the front of `buf` without consuming anything: `Ok(Some(len))` when a whole
    /// frame with a `len`-byte payload is buffered (it occupies `HEADER_LEN + len` bytes),
    /// `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] as soon as the header announces more than the limit.
    pub fn peek(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(len) = self.announced(buf)? else {
            return Ok(None);
        };
        let have = buf.len().saturating_sub(HEADER_LEN);
        Ok((have >= len).then_some(len))
    }

    /// Takes the next complete frame's payload off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame; `buf` is then left as it
    /// was, except that capacity for the rest of the frame may have been reserved. Zero-length
    /// frames are legal here and come back as an empty payload.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] as soon as the header announces more than the limit; `buf` is
    /// left untouched and the connection should be closed.
    pub fn decode<B: FrameBuffer>(&mut self, buf: &mut B) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(len) = self.announced(buf.bytes())? else {
            return Ok(None);
        };
        let have = buf.bytes().len().saturating_sub(HEADER_LEN);
        if have < len {
            buf.reserve_more(len - have);
            return Ok(None);
        }
        Ok(Some(buf.take(HEADER_LEN, len)))
    }

    /// The payload length in the header at the front of `buf`, once all four bytes are there,
    /// checked against the limit.
    fn announced(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        // A u32 always fits a usize on the 32- and 64-bit targets we build for; saturate
        // rather than assume, so a 16-bit target would only see TooLarge.
        let len = usize::try_from(u32::from_be_bytes(*header)).unwrap_or(usize::MAX);
        if len > self.max_frame {
            return Err(FrameError::TooLarge { len, max: self.max_frame });
        }
        Ok(Some(len))
    }
}

/// Appends one frame carrying `payload` to `out`.
///
/// # Errors
///
/// [`FrameError::PayloadTooLarge`] for payloads of 4 GiB or more, which the 4-byte length
/// cannot describe; nothing is written then.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::PayloadTooLarge { len: payload.len() })?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// One frame carrying `payload`, as a new buffer.
///
/// # Errors
///
/// As [`encode_frame`].
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_frame(payload, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn hello_frame_matches_the_spec() {
        // Section 2.5: the server hello is `00000002 5a35`.
        assert_eq!(frame(b"Z5").expect("fits"), [0, 0, 0, 2, b'Z', b'5']);
    }

    #[test]
    fn partial_input_needs_more() {
        let mut dec = FrameDecoder::default();
        let full = frame(b"hello").expect("fits");
        for cut in 0..full.len() {
            let mut buf = full[..cut].to_vec();
            assert_eq!(dec.decode(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf, &full[..cut], "buffer untouched at {cut}");
            assert_eq!(dec.peek(&full[..cut]), Ok(None));
        }
        let mut buf = full.clone();
        assert_eq!(dec.peek(&buf), Ok(Some(5)));
        assert_eq!(dec.decode(&mut buf), Ok(Some(b"hello".to_vec())));
        assert!(buf.is_empty());
    }

    #[test]
    fn several_frames_and_a_zero_length_one() {
        let mut buf = Vec::new();
        for payload in [&b"a"[..], b"", b"xyz"] {
            encode_frame(payload, &mut buf).expect("fits");
        }
        buf.extend_from_slice(&[0, 0]); // start of a fourth header
        let mut dec = FrameDecoder::default();
        assert_eq!(dec.decode(&mut buf), Ok(Some(b"a".to_vec())));
        assert_eq!(dec.decode(&mut buf), Ok(Some(Vec::new())));
        assert_eq!(dec.decode(&mut buf), Ok(Some(b"xyz".to_vec())));
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(buf, [0, 0]);
    }

    #[test]
    fn bytes_mut_buffers_work_the_same() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(b"one").expect("fits"));
        buf.extend_from_slice(&frame(b"").expect("fits"));
        buf.extend_from_slice(&[0, 0, 0, 9, 1]);
        let mut dec = FrameDecoder::default();
        assert_eq!(dec.decode(&mut buf), Ok(Some(b"one".to_vec())));
        assert_eq!(dec.decode(&mut buf), Ok(Some(Vec::new())));
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], [0, 0, 0, 9, 1]);
        assert!(buf.capacity() >= 13, "room reserved for the announced frame");
    }

    #[test]
    fn oversized_frames_fail_from_the_header_alone() {
        let mut dec = FrameDecoder::new(10);
        let mut at_limit = frame(&[7; 10]).expect("fits");
        assert_eq!(dec.decode(&mut at_limit), Ok(Some(vec![7; 10])));
        // Only the header of an 11-byte frame: the error comes before any payload arrives.
        let mut buf = vec![0, 0, 0, 11];
        assert_eq!(dec.decode(&mut buf), Err(FrameError::TooLarge { len: 11, max: 10 }));
        assert_eq!(buf, [0, 0, 0, 11], "buffer untouched");
        let mut huge = vec![0xff; 4];
        let err = FrameDecoder::default().decode(&mut huge);
        assert_eq!(err, Err(FrameError::TooLarge { len: u32::MAX as usize, max: DEFAULT_MAX_FRAME }));
        // A zero limit still allows empty frames.
        let mut empty = vec![0; 4];
        assert_eq!(FrameDecoder::new(0).decode(&mut empty), Ok(Some(Vec::new())));
    }

    #[test]
    fn encode_appends_to_existing_output() {
        let mut out = b"xx".to_vec();
        encode_frame(&[1, 2, 3], &mut out).expect("fits");
        assert_eq!(out, [b'x', b'x', 0, 0, 0, 3, 1, 2, 3]);
        let big = vec![0u8; 256];
        assert_eq!(frame(&big).expect("fits")[..4], [0, 0, 1, 0]);
    }

    proptest! {
        /// Any sequence of payloads, split into arbitrary reads, comes back unchanged and in
        /// order, for both buffer types.
        #[test]
        fn round_trip_with_arbitrary_chunking(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in prop::collection::vec(1usize..64, 1..40),
        ) {
            let mut stream = Vec::new();
            for p in &payloads {
                encode_frame(p, &mut stream).expect("fits");
            }
            let mut dec = FrameDecoder::new(300);
            let (mut vec_buf, mut bytes_buf) = (Vec::new(), BytesMut::new());
            let (mut from_vec, mut from_bytes) = (Vec::new(), Vec::new());
            let mut pos = 0;
            let mut cut = cuts.iter().cycle();
            while pos < stream.len() {
                let step = (*cut.next().unwrap_or(&1)).min(stream.len() - pos);
                vec_buf.extend_from_slice(&stream[pos..pos + step]);
                bytes_buf.extend_from_slice(&stream[pos..pos + step]);
                pos += step;
                while let Some(p) = dec.decode(&mut vec_buf).expect("within limit") {
                    from_vec.push(p);
                }
                while let Some(p) = dec.decode(&mut bytes_buf).expect("within limit") {
                    from_bytes.push(p);
                }
            }
            prop_assert_eq!(&from_vec, &payloads);
            prop_assert_eq!(&from_bytes, &payloads);
            prop_assert!(vec_buf.is_empty() && bytes_buf.is_empty());
        }

        /// Arbitrary bytes never panic, and whatever is decoded respects the limit and came
        /// from the input.
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..100), max in 0usize..40) {
            let mut dec = FrameDecoder::new(max);
            let mut buf = data.clone();
            let mut consumed = 0;
            while let Ok(Some(p)) = dec.decode(&mut buf) {
                prop_assert!(p.len() <= max);
                consumed += HEADER_LEN + p.len();
                prop_assert_eq!(&data[consumed..], &buf[..]);
            }
        }
    }
}
