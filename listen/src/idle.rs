//! `IdleTimeout`: fails a connection on which no byte has moved, either way, for a while. It bounds
//! idle keep-alive connections and peers that stall mid-body or stop reading a response, which a
//! head deadline alone does not.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An I/O stream whose reads and writes fail with `TimedOut` after `idle` without progress.
#[derive(Debug)]
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, idle: Duration) -> IdleTimeout<S> {
        IdleTimeout { inner, idle, timer: Box::pin(tokio::time::sleep(idle)) }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn progressed(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.idle);
    }

    /// `Pending` stays pending until the timer fires; then the stream fails.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, format!("no data moved for {:?}", self.idle)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.check_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.check_idle(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check_idle(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut s = IdleTimeout::new(ours, Duration::from_secs(5));
        let started = Instant::now();
        let err = s.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_it_alive() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut s = IdleTimeout::new(ours, Duration::from_secs(5));
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(3)).await;
            theirs.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.expect("3 s gaps are under the 5 s idle limit");
        }
        drop(theirs);
        assert_eq!(s.read(&mut [0u8; 1]).await.unwrap(), 0, "EOF passes through");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_the_writer_out() {
        let (ours, _theirs) = tokio::io::duplex(16);
        let mut s = IdleTimeout::new(ours, Duration::from_secs(5));
        let err = s.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
