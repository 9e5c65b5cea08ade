//! `std::io` adapters: [`EncryptWriter`] (`Write`) and [`DecryptReader`] (`Read`), and
//! [`read_header`].

use std::io::{self, Read, Write};

use super::{
    Decryptor, Encryptor, Header, OpenState, SealState, StreamError, FIXED_HEADER_LEN, PREFIX_LEN,
};

/// Reads a header from `input`, leaving it positioned at the first frame. Reads exactly the
/// header's bytes, each length checked against its bound before anything is allocated.
///
/// # Errors
/// `InvalidData` wrapping a [`StreamError`] for a malformed header (an input that ends inside
/// it: [`StreamError::TruncatedHeader`]); other kinds as `input` fails.
pub fn read_header<R: Read + ?Sized>(input: &mut R) -> io::Result<Header> {
    let mut prefix = [0u8; PREFIX_LEN];
    exact(input, &mut prefix)?;
    Header::check_prefix(&prefix)?;
    let mut fixed = [0u8; FIXED_HEADER_LEN - PREFIX_LEN];
    exact(input, &mut fixed)?;
    let (frame_size, salt, wlen) = Header::parse_fixed_rest(&fixed)?;
    let mut wrapped_key = vec![0u8; wlen];
    exact(input, &mut wrapped_key)?;
    let mut clen = [0u8; 4];
    exact(input, &mut clen)?;
    let mut ctx = vec![0u8; Header::parse_context_len(clen)?];
    exact(input, &mut ctx)?;
    Ok(Header::from_parts(frame_size, salt, wrapped_key, &ctx)?)
}

/// `read_exact`, with an early end reported as [`StreamError::TruncatedHeader`].
fn exact<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> io::Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            StreamError::TruncatedHeader.into()
        } else {
            e
        }
    })
}

/// Encrypts what is written to it into a streaming file written to `W`, one frame at a time
/// (memory: about two frames).
///
/// Call [`finish`](Self::finish) at the end: it seals the final frame. A writer dropped
/// without it leaves a file that every reader refuses as truncated.
pub struct EncryptWriter<W: Write> {
    inner: W,
    state: SealState,
}

impl<W: Write> EncryptWriter<W> {
    /// Writes the header to `inner` and returns the writer.
    ///
    /// # Errors
    /// Writing the header failed.
    pub fn new(inner: W, encryptor: Encryptor) -> io::Result<Self> {
        let mut w = Self {
            inner,
            state: SealState::new(encryptor),
        };
        w.drain()?;
        Ok(w)
    }

    fn drain(&mut self) -> io::Result<()> {
        while !self.state.pending().is_empty() {
            self.inner.write_all(self.state.pending())?;
            let n = self.state.pending().len();
            self.state.consumed(n);
        }
        Ok(())
    }

    /// Seals and writes the final frame, flushes, and returns the inner writer.
    ///
    /// # Errors
    /// Writing failed.
    pub fn finish(mut self) -> io::Result<W> {
        self.state.finish()?;
        self.drain()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            done += self.state.accept(&data[done..])?;
            self.drain()?;
        }
        Ok(done)
    }

    /// Writes the frames sealed so far. The frame being filled stays buffered: it can be sealed
    /// only once it is known whether it is the last.
    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

/// Decrypts a streaming file read from `R` (positioned after the header), handing out each
/// frame's plaintext only once its tag verified.
///
/// A file is whole only when `read` has returned `Ok(0)`: a file cut at a frame boundary is
/// found when its last frame fails as final. Callers that write plaintext to a file should
/// write it under a temporary name and rename it only after that `Ok(0)`.
pub struct DecryptReader<R: Read> {
    inner: R,
    state: OpenState,
}

impl<R: Read> DecryptReader<R> {
    /// Wraps `inner`, positioned after the header of the file `decryptor` was made for.
    pub fn new(inner: R, decryptor: Decryptor) -> Self {
        Self {
            inner,
            state: OpenState::new(decryptor),
        }
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.state.available().is_empty() || out.is_empty() {
                return Ok(self.state.take(out));
            }
            if let Some(e) = self.state.failure() {
                return Err(e.into());
            }
            while self.state.wants_input() {
                match self.inner.read(self.state.space()) {
                    Ok(n) => self.state.filled(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if !self.state.ready() {
                return Ok(0);
            }
            self.state.open()?;
        }
    }
}
