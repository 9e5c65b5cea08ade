//! `tokio::io` adapters: [`AsyncEncryptWriter`] (`AsyncWrite`) and [`AsyncDecryptReader`]
//! (`AsyncRead`), and [`read_header_async`]. Same format and guarantees as the `std::io` ones.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::{
    Decryptor, Encryptor, Header, OpenState, SealState, StreamError, FIXED_HEADER_LEN, PREFIX_LEN,
};

/// Reads a header from an async `input` (see [`read_header`](super::read_header)).
///
/// # Errors
/// As [`read_header`](super::read_header).
pub async fn read_header_async<R: AsyncRead + Unpin + ?Sized>(input: &mut R) -> io::Result<Header> {
    let mut prefix = [0u8; PREFIX_LEN];
    exact(input, &mut prefix).await?;
    Header::check_prefix(&prefix)?;
    let mut fixed = [0u8; FIXED_HEADER_LEN - PREFIX_LEN];
    exact(input, &mut fixed).await?;
    let (frame_size, salt, wlen) = Header::parse_fixed_rest(&fixed)?;
    let mut wrapped_key = vec![0u8; wlen];
    exact(input, &mut wrapped_key).await?;
    let mut clen = [0u8; 4];
    exact(input, &mut clen).await?;
    let mut ctx = vec![0u8; Header::parse_context_len(clen)?];
    exact(input, &mut ctx).await?;
    Ok(Header::from_parts(frame_size, salt, wrapped_key, &ctx)?)
}

async fn exact<R: AsyncRead + Unpin + ?Sized>(input: &mut R, buf: &mut [u8]) -> io::Result<()> {
    match input.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(StreamError::TruncatedHeader.into())
        }
        Err(e) => Err(e),
    }
}

/// The async [`EncryptWriter`](super::EncryptWriter): `shutdown` seals and writes the final
/// frame, then shuts the inner writer down. Without `shutdown` the file stays truncated.
pub struct AsyncEncryptWriter<W> {
    inner: W,
    state: SealState,
}

impl<W: AsyncWrite + Unpin> AsyncEncryptWriter<W> {
    /// Wraps `inner`; the header is written with the first write, flush or shutdown.
    pub fn new(inner: W, encryptor: Encryptor) -> Self {
        Self {
            inner,
            state: SealState::new(encryptor),
        }
    }

    /// The inner writer (after `shutdown`, the whole file has gone to it).
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.state.pending().is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, self.state.pending()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.state.consumed(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AsyncEncryptWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Poll::Ready(this.state.accept(data).map_err(io::Error::from))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if !this.state.finished {
            this.state.finish()?;
            ready!(this.poll_drain(cx))?;
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The async [`DecryptReader`](super::DecryptReader): plaintext of each frame only after its
/// tag verified; the file is whole only once a read returns no bytes.
pub struct AsyncDecryptReader<R> {
    inner: R,
    state: OpenState,
}

impl<R: AsyncRead + Unpin> AsyncDecryptReader<R> {
    /// Wraps `inner`, positioned after the header of the file `decryptor` was made for.
    pub fn new(inner: R, decryptor: Decryptor) -> Self {
        Self {
            inner,
            state: OpenState::new(decryptor),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncDecryptReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.state.available().is_empty() || out.remaining() == 0 {
                let n = this.state.take(out.initialize_unfilled());
                out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.state.failure() {
                return Poll::Ready(Err(e.into()));
            }
            while this.state.wants_input() {
                let mut rb = ReadBuf::new(this.state.space());
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                this.state.filled(n);
            }
            if !this.state.ready() {
                return Poll::Ready(Ok(()));
            }
            this.state.open()?;
        }
    }
}
