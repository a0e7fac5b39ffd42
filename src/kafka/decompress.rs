//! The records of a compressed batch, expanded as a stream: a reader over the codec that a
//! batch's attributes name, through a limit on the bytes it may expand to. A batch of a few KB
//! on the wire may claim gigabytes (a zstd frame of zeros expands 30,000 times); read this way,
//! memory holds one codec window and one buffer, whatever the ratio, and the reader stops at
//! the limit with an error instead of growing a buffer.

use std::io::{self, BufRead, BufReader, Read};

/// The largest zstd window accepted, as a power of two (32 MiB): Kafka's producers (level 3 by
/// default) use 8 MiB at most; a frame asking for more is refused rather than allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;
/// The largest block a snappy stream may declare (Kafka's Java producer writes 32 KiB blocks;
/// a raw snappy batch is one block): the decoder needs a buffer of that size.
const SNAPPY_BLOCK_MAX: usize = 16 * 1024 * 1024;
/// The buffer between a codec and the record parser.
const BUFFER: usize = 64 * 1024;
/// The stream header of xerial snappy, which Kafka's Java clients write: magic, then version
/// and compatible version (4 bytes each).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// A batch's codec, from the low three bits of its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec of a batch's attributes, or `None` for a value Kafka does not define.
    pub fn from_attributes(attributes: i16) -> Option<Codec> {
        match attributes & 0x7 {
            0 => Some(Codec::None),
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Snappy),
            3 => Some(Codec::Lz4),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// The expanded records section of a batch, as a buffered reader that fails with
/// [`io::ErrorKind::FileTooLarge`] once more than `limit` bytes came out of it.
pub fn expand<'a>(
    codec: Codec,
    compressed: &'a [u8],
    limit: u64,
) -> io::Result<BufReader<Limited<Box<dyn Read + 'a>>>> {
    let inner: Box<dyn Read + 'a> = match codec {
        Codec::None => Box::new(compressed),
        Codec::Gzip => Box::new(flate2::read::GzDecoder::new(compressed)),
        Codec::Snappy => Box::new(Snappy::new(compressed)?),
        Codec::Lz4 => Box::new(lz4::Decoder::new(compressed)?),
        Codec::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(compressed)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
    };
    Ok(BufReader::with_capacity(
        BUFFER,
        Limited {
            inner,
            left: limit,
            limit,
        },
    ))
}

/// A reader that refuses to deliver more than a limit.
pub struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R> Limited<R> {
    /// Bytes delivered so far.
    #[cfg(test)]
    pub fn delivered(&self) -> u64 {
        self.limit - self.left
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // One more byte tells whether the stream really goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("expands to more than {} bytes", self.limit),
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Snappy as Kafka writes it: xerial's stream (a header, then blocks each preceded by its
/// 4-byte length), or, without the header, one raw block. One block is expanded at a time,
/// into a buffer no larger than [`SNAPPY_BLOCK_MAX`].
struct Snappy<'a> {
    rest: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    at: usize,
}

impl<'a> Snappy<'a> {
    fn new(compressed: &'a [u8]) -> io::Result<Self> {
        if compressed.is_empty() {
            return Err(corrupt("an empty snappy stream".into()));
        }
        let framed = compressed.starts_with(XERIAL_MAGIC);
        let rest = if framed {
            compressed
                .get(XERIAL_HEADER_LEN..)
                .ok_or_else(|| corrupt("a snappy header cut short".into()))?
        } else {
            compressed
        };
        Ok(Snappy {
            rest,
            framed,
            block: Vec::new(),
            at: 0,
        })
    }

    /// Expands the next block into `self.block`; false at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.rest.is_empty() {
            return Ok(false);
        }
        let block = if self.framed {
            let (len, tail) = self
                .rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("a snappy block length cut short".into()))?;
            let len = u32::from_be_bytes(*len) as usize;
            let block = tail
                .get(..len)
                .ok_or_else(|| corrupt(format!("a snappy block of {len} bytes cut short")))?;
            self.rest = &tail[len..];
            block
        } else {
            std::mem::take(&mut self.rest)
        };
        let expanded = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        if expanded > SNAPPY_BLOCK_MAX {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("a snappy block claims {expanded} bytes, more than {SNAPPY_BLOCK_MAX}"),
            ));
        }
        self.block.clear();
        self.block.resize(expanded, 0);
        let n = snap::raw::Decoder::new()
            .decompress(block, &mut self.block)
            .map_err(|e| corrupt(e.to_string()))?;
        self.block.truncate(n);
        self.at = 0;
        Ok(true)
    }
}

impl Read for Snappy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads and drops up to `n` bytes; how many there were.
pub fn skip(reader: &mut impl BufRead, n: u64) -> io::Result<u64> {
    io::copy(&mut reader.take(n), &mut io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(codec: Codec, data: &[u8], limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        expand(codec, data, limit)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_codec_expands_through_the_limit() {
        let plain: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let zstd = zstd::encode_all(&plain[..], 3).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        let gzip = gz.finish().unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in plain.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&block);
        }
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        std::io::Write::write_all(&mut lz, &plain).unwrap();
        let (lz4, r) = lz.finish();
        r.unwrap();
        let len = plain.len() as u64;
        for (codec, data) in [
            (Codec::None, &plain),
            (Codec::Zstd, &zstd),
            (Codec::Gzip, &gzip),
            (Codec::Snappy, &raw_snappy),
            (Codec::Snappy, &xerial),
            (Codec::Lz4, &lz4),
        ] {
            assert_eq!(all(codec, data, len).unwrap(), plain, "{codec:?}");
            let e = all(codec, data, len - 1).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "{codec:?}: {e}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit_with_little_memory() {
        // 256 MiB of zeros in a frame of a few KB.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut r = expand(Codec::Zstd, &bomb, 1 << 20).unwrap();
        let e = skip(&mut r, u64::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(r.get_ref().delivered(), 1 << 20);
    }

    #[test]
    fn a_snappy_block_claiming_too_much_is_refused_before_allocation() {
        // A raw block whose length preamble (a varint) claims 4 GiB - 1.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let e = all(Codec::Snappy, &claim, u64::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "{e}");
        assert!(all(Codec::Snappy, &[], 10).is_err());
        assert!(all(Codec::Zstd, b"not zstd", 10).is_err());
        assert!(all(Codec::Lz4, b"not lz4", 10).is_err());
        assert!(all(Codec::Gzip, b"not gzip", 10).is_err());
    }
}
