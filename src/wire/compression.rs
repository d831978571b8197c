//! The four codecs a record batch may use (attributes bits 0-2), with a bound on what decompression may
//! allocate so that a "compression bomb" is an error, not an out-of-memory kill.

use std::io::{Read, Write};

/// Compression codec of a record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (deflate), level 6 by default.
    Gzip,
    /// Snappy with the xerial framing the Java client writes.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// A batch whose compressed part cannot be (de)compressed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CompressionError {
    /// The attributes name a codec number that does not exist.
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    /// The compressed bytes are corrupt.
    #[error("{codec:?}: corrupt compressed data: {detail}")]
    Corrupt {
        /// The codec.
        codec: Compression,
        /// What the codec said.
        detail: String,
    },
    /// Decompressing would produce more than the allowed bytes.
    #[error("{codec:?}: decompressed size exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The codec.
        codec: Compression,
        /// The limit.
        limit: usize,
    },
}

impl Compression {
    /// The codec number stored in a batch's attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec for a batch attributes' codec number.
    pub fn from_id(id: u8) -> Result<Self, CompressionError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(CompressionError::UnknownCodec(other)),
        })
    }

    /// The codec's name as users type it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Parses a codec name as users type it (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }

    /// Whether `level` means something for this codec: gzip 1-9, zstd 1-22; the others take none.
    pub fn check_level(self, level: i32) -> Result<(), String> {
        let range = match self {
            Compression::Gzip => 1..=9,
            Compression::Zstd => 1..=22,
            _ => {
                return Err(format!(
                    "a compression level applies to gzip (1-9) and zstd (1-22), not to {}",
                    self.name()
                ))
            }
        };
        match range.contains(&level) {
            true => Ok(()),
            false => Err(format!(
                "compression level {level} is outside {}'s {}-{}",
                self.name(),
                range.start(),
                range.end()
            )),
        }
    }
}

/// xerial snappy-java's stream header, which the Java client writes before snappy blocks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;

/// Compresses `input` with `codec`, appending to `out`. `level` applies to gzip and zstd.
pub fn compress(
    codec: Compression,
    level: Option<i32>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let corrupt = |detail: String| CompressionError::Corrupt { codec, detail };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let lvl = level.map_or(flate2::Compression::default(), |l| {
                flate2::Compression::new(l.clamp(1, 9) as u32)
            });
            let mut enc = flate2::write::GzEncoder::new(out, lvl);
            enc.write_all(input).map_err(|e| corrupt(e.to_string()))?;
            enc.finish().map_err(|e| corrupt(e.to_string()))?;
        }
        Compression::Snappy => {
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let at = out.len();
                out.resize(at + 4 + snap::raw::max_compress_len(block.len()), 0);
                let n = enc
                    .compress(block, &mut out[at + 4..])
                    .map_err(|e| corrupt(e.to_string()))?;
                out[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
                out.truncate(at + 4 + n);
            }
        }
        Compression::Lz4 => lz4_frame(input, out).map_err(|e| corrupt(e.to_string()))?,
        Compression::Zstd => {
            let lvl = level.unwrap_or(3);
            let mut enc =
                zstd::stream::write::Encoder::new(out, lvl).map_err(|e| corrupt(e.to_string()))?;
            enc.write_all(input).map_err(|e| corrupt(e.to_string()))?;
            enc.finish().map_err(|e| corrupt(e.to_string()))?;
        }
    }
    Ok(())
}

/// The LZ4 frame header Kafka's clients write: magic, FLG 0x60 (version 01, independent blocks, no
/// block or content checksum, no content size, no dictionary), BD 0x40 (blocks of at most 64 KiB),
/// and the header checksum (the second byte of xxh32 over FLG and BD; a test checks it against
/// lz4_flex's own frame encoder).
const LZ4_FRAME_HEADER: [u8; 7] = [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82];
/// Input bytes per LZ4 block (BD's 64 KiB).
const LZ4_BLOCK: usize = 64 * 1024;
/// A block's size word with this bit set holds the block uncompressed.
const LZ4_STORED: u32 = 0x8000_0000;

/// An LZ4 frame around lz4_flex's block compressor, written straight into `out`. lz4_flex's own frame
/// encoder copies every block in and out of buffers of its own: 390 against 510 MB/s here on 1 KB log
/// lines (a scratch benchmark of the musl build; C lz4 1.10 compresses at the same 510).
fn lz4_frame(input: &[u8], out: &mut Vec<u8>) -> Result<(), lz4_flex::block::CompressError> {
    out.extend_from_slice(&LZ4_FRAME_HEADER);
    for block in input.chunks(LZ4_BLOCK) {
        let at = out.len();
        out.resize(
            at + 4 + lz4_flex::block::get_maximum_output_size(block.len()),
            0,
        );
        let n = lz4_flex::block::compress_into(block, &mut out[at + 4..])?;
        if n < block.len() {
            out[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
            out.truncate(at + 4 + n);
        } else {
            // Incompressible: stored as it is (the frame format's escape), never larger than the input.
            out.truncate(at);
            out.extend_from_slice(&(block.len() as u32 | LZ4_STORED).to_le_bytes());
            out.extend_from_slice(block);
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    Ok(())
}

/// Compression state kept between batches: the output buffer and the zstd context (making a zstd
/// context per batch costs an allocation of several MiB each time).
#[derive(Default)]
pub struct Compressor {
    out: Vec<u8>,
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor").finish_non_exhaustive()
    }
}

impl Compressor {
    /// Compresses `input`; the result is valid until the next call.
    pub fn compress(
        &mut self,
        codec: Compression,
        level: Option<i32>,
        input: &[u8],
    ) -> Result<&[u8], CompressionError> {
        self.out.clear();
        if codec != Compression::Zstd {
            compress(codec, level, input, &mut self.out)?;
            return Ok(&self.out);
        }
        let corrupt = |e: std::io::Error| CompressionError::Corrupt {
            codec,
            detail: e.to_string(),
        };
        let lvl = level.unwrap_or(3);
        if self.zstd.as_ref().is_none_or(|(l, _)| *l != lvl) {
            self.zstd = Some((lvl, zstd::bulk::Compressor::new(lvl).map_err(corrupt)?));
        }
        let Some((_, ctx)) = self.zstd.as_mut() else {
            unreachable!("set above")
        };
        self.out
            .reserve(zstd::zstd_safe::compress_bound(input.len()));
        ctx.compress_to_buffer(input, &mut self.out)
            .map_err(corrupt)?;
        Ok(&self.out)
    }
}

/// Decompresses `input` into `out` (cleared first), failing once the output would exceed `limit` bytes.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), CompressionError> {
    out.clear();
    let corrupt = |detail: String| CompressionError::Corrupt { codec, detail };
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(CompressionError::TooLarge { codec, limit });
            }
            out.extend_from_slice(input);
            Ok(())
        }
        Compression::Gzip => read_bounded(codec, flate2::read::GzDecoder::new(input), out, limit),
        Compression::Lz4 => {
            read_bounded(codec, lz4_flex::frame::FrameDecoder::new(input), out, limit)
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| corrupt(e.to_string()))?;
            read_bounded(codec, dec, out, limit)
        }
        Compression::Snappy => snappy_decompress(input, out, limit),
    }
}

fn read_bounded<R: Read>(
    codec: Compression,
    reader: R,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), CompressionError> {
    let mut r = reader.take(limit as u64 + 1);
    r.read_to_end(out).map_err(|e| CompressionError::Corrupt {
        codec,
        detail: e.to_string(),
    })?;
    if out.len() > limit {
        return Err(CompressionError::TooLarge { codec, limit });
    }
    Ok(())
}

/// Snappy as Kafka clients write it: xerial-framed (Java) or one raw block (some other clients).
fn snappy_decompress(
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), CompressionError> {
    let codec = Compression::Snappy;
    let corrupt = |detail: &str| CompressionError::Corrupt {
        codec,
        detail: detail.to_string(),
    };
    let mut dec = snap::raw::Decoder::new();
    let mut raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), CompressionError> {
        let n = snap::raw::decompress_len(block).map_err(|e| corrupt(&e.to_string()))?;
        if out.len() + n > limit {
            return Err(CompressionError::TooLarge { codec, limit });
        }
        let at = out.len();
        out.resize(at + n, 0);
        dec.decompress(block, &mut out[at..])
            .map_err(|e| corrupt(&e.to_string()))?;
        Ok(())
    };
    if input.len() < XERIAL_HEADER_LEN || &input[..8] != XERIAL_MAGIC {
        return raw_block(input, out);
    }
    let mut rest = &input[XERIAL_HEADER_LEN..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt("truncated xerial block length"));
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if n > rest.len() {
            return Err(corrupt("xerial block longer than the data"));
        }
        raw_block(&rest[..n], out)?;
        rest = &rest[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for codec in ALL {
            let mut c = Vec::new();
            compress(codec, None, &input, &mut c).unwrap();
            let mut d = Vec::new();
            decompress(codec, &c, &mut d, 1 << 20).unwrap();
            assert_eq!(d, input, "{codec:?}");
        }
    }

    #[test]
    fn levels_are_checked_against_the_codec() {
        assert!(Compression::Gzip.check_level(9).is_ok());
        assert!(Compression::Zstd.check_level(22).is_ok());
        let e = Compression::Gzip.check_level(10).unwrap_err();
        assert_eq!(e, "compression level 10 is outside gzip's 1-9");
        assert!(Compression::Zstd.check_level(23).is_err());
        assert!(Compression::Gzip.check_level(0).is_err());
        let e = Compression::Lz4.check_level(3).unwrap_err();
        assert!(e.contains("not to lz4"), "{e}");
        assert!(Compression::None.check_level(1).is_err());
    }

    #[test]
    fn a_reused_compressor_round_trips_every_codec_and_level() {
        let mut c = Compressor::default();
        for level in [None, Some(1), Some(9)] {
            for codec in ALL {
                for n in [0usize, 10, 300_000] {
                    let input: Vec<u8> = (0..n).map(|i| (i % 97) as u8).collect();
                    let out = c.compress(codec, level, &input).unwrap().to_vec();
                    let mut d = Vec::new();
                    decompress(codec, &out, &mut d, 1 << 20).unwrap();
                    assert_eq!(d, input, "{codec:?} {level:?} {n}");
                }
            }
        }
    }

    #[test]
    fn lz4_frames_are_what_lz4_flex_and_kafka_protocol_read_and_share_their_header() {
        use std::io::{Read, Write};
        // Text that compresses, random bytes that do not (stored blocks), and the block edges.
        let mut seed = 7u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 56) as u8
            })
            .collect();
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| {
                format!("2024-05-01T10:40:{i:05} host app[{i}]: request done\n").into_bytes()
            })
            .collect();
        let mut inputs = vec![Vec::new(), b"x".to_vec(), noise.clone(), text.clone()];
        for n in [LZ4_BLOCK - 1, LZ4_BLOCK, LZ4_BLOCK + 1, 3 * LZ4_BLOCK] {
            inputs.push(text[..n].to_vec());
            inputs.push(noise[..n].to_vec());
        }
        for input in &inputs {
            let mut ours = Vec::new();
            compress(Compression::Lz4, None, input, &mut ours).unwrap();
            let mut back = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&ours[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(
                &back,
                input,
                "lz4_flex reads it back ({} bytes)",
                input.len()
            );
            assert!(ours.len() <= input.len() + input.len() / LZ4_BLOCK * 4 + 15);
            // kafka-protocol's codec (the C lz4 library's frame decoder) reads it too.
            use kafka_protocol::compression::Decompressor;
            let c = kafka_protocol::compression::Lz4::decompress(
                &mut bytes::Bytes::from(ours.clone()),
                |b| Ok(b.to_vec()),
            )
            .unwrap();
            assert_eq!(&c, input, "C lz4 reads it back ({} bytes)", input.len());
        }
        let info = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .block_mode(lz4_flex::frame::BlockMode::Independent);
        let mut theirs = Vec::new();
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, &mut theirs);
        enc.write_all(&text).unwrap();
        enc.finish().unwrap();
        assert_eq!(
            theirs[..7],
            LZ4_FRAME_HEADER,
            "the same header, checksum included"
        );
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let input = vec![0u8; 1 << 20];
        for codec in ALL {
            let mut c = Vec::new();
            compress(codec, None, &input, &mut c).unwrap();
            let mut d = Vec::new();
            let r = decompress(codec, &c, &mut d, 1000);
            assert!(
                matches!(r, Err(CompressionError::TooLarge { .. })),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for codec in ALL[1..].iter().copied() {
            let mut d = Vec::new();
            assert!(decompress(codec, b"\x82SNAPPY\x00garbage-garbage", &mut d, 1000).is_err());
        }
    }
}
