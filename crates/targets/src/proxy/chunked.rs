//! Finding where a chunked HTTP/1.1 body ends while its bytes pass through unchanged: sizes,
//! extensions, data, the last chunk and its trailer fields (RFC 9112 §7.1), strictly — a malformed
//! stream is an error, never a guess at where the next message starts.

/// Where the scanner stands in the chunked stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` seen so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// After `;`: an extension, up to the line's CR.
    Extension {
        size: u64,
    },
    /// After the size line's CR: its LF.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to pass.
    Data {
        left: u64,
    },
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the empty line that ends the message).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// A trailer line's CR seen: its LF.
    TrailerLf,
    /// The empty line's CR seen: its LF ends the message.
    EndLf,
    Done,
}

/// A chunked body that does not follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Scans a chunked body fed in pieces of any size.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked { state: State::Size { size: 0, digits: 0 } }
    }
}

impl Chunked {
    /// Feeds the next bytes of the body. Returns how many of them belong to it when the body ends
    /// within `bytes` (the rest belong to whatever follows), `None` when all of them do and it
    /// goes on.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut at = 0;
        while at < bytes.len() {
            if let State::Data { left } = self.state {
                // Data passes in one step, however long.
                let take = left.min((bytes.len() - at) as u64);
                at += take as usize;
                self.state = if take == left { State::DataCr } else { State::Data { left: left - take } };
                continue;
            }
            let byte = bytes[at];
            at += 1;
            self.state = match (self.state, byte) {
                (State::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                    // Sixteen hex digits fill a u64; more would overflow.
                    if digits >= 16 {
                        return Err(Malformed);
                    }
                    let digit = (b as char).to_digit(16).map_or(0, u64::from);
                    State::Size { size: size << 4 | digit, digits: digits + 1 }
                }
                (State::Size { size, digits }, b';') if digits > 0 => State::Extension { size },
                (State::Size { size, digits }, b'\r') if digits > 0 => State::SizeLf { size },
                (State::Extension { size }, b'\r') => State::SizeLf { size },
                (State::Extension { size }, b) if b != b'\n' => State::Extension { size },
                (State::SizeLf { size: 0 }, b'\n') => State::TrailerStart,
                (State::SizeLf { size }, b'\n') => State::Data { left: size },
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::Trailer, b) if b != b'\n' && b != b'\r' => State::Trailer,
                (State::Trailer, b'\r') => State::TrailerLf,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Some(at));
                }
                _ => return Err(Malformed),
            };
        }
        Ok(None)
    }

    /// The whole body has passed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A chunked encoding of `parts`, with an extension on some sizes and the given trailers.
    fn encode(parts: &[Vec<u8>], trailers: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, part) in parts.iter().filter(|p| !p.is_empty()).enumerate() {
            out.extend_from_slice(format!("{:x}", part.len()).as_bytes());
            if i % 2 == 1 {
                out.extend_from_slice(b";name=value");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for trailer in trailers {
            out.extend_from_slice(trailer.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Where the body ends, feeding `bytes` in pieces cut at `cuts`.
    fn end_of(bytes: &[u8], cuts: &[usize]) -> Result<Option<usize>, Malformed> {
        let mut scanner = Chunked::default();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        for piece in cuts.windows(2) {
            if let Some(n) = scanner.feed(&bytes[piece[0]..piece[1]])? {
                return Ok(Some(piece[0] + n));
            }
        }
        Ok(None)
    }

    #[test]
    fn a_body_ends_after_its_last_chunk_and_trailers_and_not_before() {
        let body = encode(&[b"hello".to_vec(), b" world".to_vec()], &["checksum: abc"]);
        let mut stream = body.clone();
        stream.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(end_of(&stream, &[]), Ok(Some(body.len())));
        assert_eq!(end_of(&body[..body.len() - 1], &[]), Ok(None), "one byte short is not the end");
        // Sizes in either case, with leading zeros.
        assert_eq!(end_of(b"0A\r\n0123456789\r\n000\r\n\r\n", &[]), Ok(Some(23)));
        assert_eq!(end_of(b"a\r\n0123456789\r\n0\r\n\r\n", &[3, 4, 15]), Ok(Some(20)));
    }

    #[test]
    fn malformed_streams_are_refused() {
        for bad in [
            &b"\r\n"[..],                 // no size
            b"g\r\n",                     // not hex
            b"5\r\nhelloX\r\n",           // data longer than its size
            b"5\nhello\r\n0\r\n\r\n",     // bare LF after the size
            b"5\r\nhello\r\n0\r\n\n",     // bare LF ending the message
            b"11111111111111111\r\n",     // seventeen digits
            b"0\r\nbad\ntrailer\r\n\r\n", // bare LF in a trailer
            b"-1\r\n",                    // a sign
        ] {
            assert_eq!(end_of(bad, &[]), Err(Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        /// Any body, cut anywhere, ends exactly where its encoding ends.
        #[test]
        fn any_body_cut_anywhere_ends_where_its_encoding_ends(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            trailers in proptest::collection::vec("[a-z]{1,8}: [a-z0-9 ]{0,8}", 0..3),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            after in proptest::collection::vec(any::<u8>(), 0..10),
        ) {
            let trailers: Vec<&str> = trailers.iter().map(String::as_str).collect();
            let body = encode(&parts, &trailers);
            let mut stream = body.clone();
            stream.extend_from_slice(&after);
            prop_assert_eq!(end_of(&stream, &cuts), Ok(Some(body.len())));
        }

        /// Arbitrary bytes never panic the scanner, and an end it reports lies within them.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), cuts in proptest::collection::vec(any::<usize>(), 0..5)) {
            if let Ok(Some(end)) = end_of(&bytes, &cuts) {
                prop_assert!(end <= bytes.len());
            }
        }
    }
}
