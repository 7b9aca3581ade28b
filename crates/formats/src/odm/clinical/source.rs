//! The bytes under the XML parser: counted against a size limit, and followed to know the line
//! and column of every event without keeping the file.
//!
//! The parser asks for bytes with `fill_buf` and takes them with `consume`. The bytes taken
//! since the last [`Source::mark`] are kept, so the position of an error inside the event being
//! read can be computed; `mark` (called before each event) folds them into the running line and
//! column and drops them. What is kept is therefore at most one event's bytes, which the parser
//! holds too.

use std::io::{self, BufRead, Read};

/// UTF-8's byte order mark, which a file may start with and which takes no column.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// The largest event (a tag with its attributes, or a text between tags) read, in bytes: the
/// parser holds one event whole, and this reader keeps its bytes too.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    pub(super) line: usize,
    pub(super) column: usize,
}

impl Pos {
    /// The position after `bytes`, read from here.
    fn advanced(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            if b == b'\n' {
                self.line += 1;
                self.column = 1;
            } else if b & 0xC0 != 0x80 {
                // Not a UTF-8 continuation byte: a character starts here.
                self.column += 1;
            }
        }
        self
    }
}

pub(super) struct Source<R> {
    inner: R,
    /// The most bytes the file may have, byte order mark included.
    limit: Option<u64>,
    /// Bytes taken from `inner` so far, byte order mark included.
    taken: u64,
    /// Set when the parser asked for more bytes than `limit` allows.
    over_limit: bool,
    /// Set when the parser asked for more bytes of one event than [`MAX_EVENT_BYTES`].
    event_too_large: bool,
    /// Whether a leading byte order mark has been looked for.
    started: bool,
    /// Bytes the parser consumed since the last mark.
    pending: Vec<u8>,
    /// Where the last mark was: the position, and the parser's byte offset (which does not count
    /// a byte order mark: the parser never sees it).
    mark: Pos,
    mark_offset: u64,
}

impl<R: BufRead> Source<R> {
    pub(super) fn new(inner: R, limit: Option<u64>) -> Self {
        Self {
            inner,
            limit,
            taken: 0,
            over_limit: false,
            event_too_large: false,
            started: false,
            pending: Vec::new(),
            mark: Pos { line: 1, column: 1 },
            mark_offset: 0,
        }
    }

    /// The position of everything consumed so far; forgets the bytes behind it.
    pub(super) fn mark(&mut self) -> Pos {
        self.mark = self.mark.advanced(&self.pending);
        self.mark_offset += self.pending.len() as u64;
        self.pending.clear();
        self.mark
    }

    /// The position of a parser offset at or after the last mark (earlier ones give the mark).
    pub(super) fn position_of(&self, offset: u64) -> Pos {
        let ahead = usize::try_from(offset.saturating_sub(self.mark_offset)).unwrap_or(usize::MAX);
        self.mark.advanced(&self.pending[..ahead.min(self.pending.len())])
    }

    /// Whether reading stopped because the file is larger than the limit.
    pub(super) fn over_limit(&self) -> bool {
        self.over_limit
    }

    /// Whether reading stopped because one event is larger than [`MAX_EVENT_BYTES`].
    pub(super) fn event_too_large(&self) -> bool {
        self.event_too_large
    }

    pub(super) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Drops a leading byte order mark, counting it against the limit.
    fn skip_bom(&mut self) -> io::Result<()> {
        self.started = true;
        if self.inner.fill_buf()?.starts_with(&BOM) {
            self.inner.consume(BOM.len());
            self.taken += BOM.len() as u64;
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.started {
            self.skip_bom()?;
        }
        if self.pending.len() > MAX_EVENT_BYTES {
            self.event_too_large = true;
            return Err(io::Error::other(format!("an event is larger than {MAX_EVENT_BYTES} bytes")));
        }
        let available = self.inner.fill_buf()?.len();
        let allowed = match self.limit {
            Some(limit) => {
                let room = usize::try_from(limit.saturating_sub(self.taken)).unwrap_or(usize::MAX);
                if room == 0 && available > 0 {
                    self.over_limit = true;
                    return Err(io::Error::other(format!("the file is larger than {limit} bytes")));
                }
                available.min(room)
            }
            None => available,
        };
        Ok(&self.inner.fill_buf()?[..allowed])
    }

    fn consume(&mut self, amount: usize) {
        // `fill_buf` without a `consume` in between gives the same bytes again, without IO.
        if let Ok(bytes) = self.inner.fill_buf() {
            self.pending.extend_from_slice(&bytes[..amount.min(bytes.len())]);
        }
        self.inner.consume(amount);
        self.taken += amount as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let mut s = Source::new("ab\nçd<x".as_bytes(), None);
        let n = s.fill_buf().unwrap().len();
        s.consume(n);
        assert_eq!(s.position_of(0), Pos { line: 1, column: 1 });
        assert_eq!(s.position_of(3), Pos { line: 2, column: 1 });
        assert_eq!(s.position_of(6), Pos { line: 2, column: 3 });
        assert_eq!(s.mark(), Pos { line: 2, column: 5 });
        assert_eq!(s.position_of(0), Pos { line: 2, column: 5 });
    }

    #[test]
    fn a_byte_order_mark_takes_no_column_but_counts_against_the_limit() {
        let mut s = Source::new(&b"\xEF\xBB\xBF<a/>"[..], Some(6));
        let mut out = Vec::new();
        let err = s.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"<a/".to_vec());
        assert!(s.over_limit(), "{err}");
        let mut s = Source::new(&b"\xEF\xBB\xBF<a/>"[..], Some(7));
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(s.mark(), Pos { line: 1, column: 5 });
    }
}
