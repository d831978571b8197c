//! A structural check of response bodies before kafka-protocol decodes them.
//!
//! kafka-protocol sizes each array from the count on the wire (`Vec::with_capacity(n)`) before reading
//! any element, so a corrupt or hostile count makes it try to allocate gigabytes and abort the process.
//! This walker follows the same layout for the (flexible) versions shipper negotiates and rejects any
//! array whose count exceeds the bytes left, any length past the end, and trailing garbage. It allocates
//! nothing and runs in time linear in the frame. Layouts follow the message JSON in Kafka's
//! `clients/src/main/resources/common/message/`.

use kafka_protocol::messages::ApiKey;

/// One field of a response layout.
#[derive(Debug, Clone, Copy)]
enum F {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    /// Compact (nullable) string: unsigned varint length + 1, then bytes.
    Str,
    /// Classic (nullable) string: i16 length (-1 = null), then bytes.
    Str16,
    /// Compact nullable bytes, as records are carried.
    Bytes,
    /// Compact (nullable) array of elements of this layout.
    Arr(&'static [F]),
    /// Classic array: i32 count (-1 = null), elements of this layout.
    Arr32(&'static [F]),
    /// Tagged fields; tags listed here have their contents checked against a layout.
    Tags(&'static [(u64, &'static [F])]),
    /// Nullable struct: an int8 marker, -1 for null or 1 for present, then (if present) the struct's
    /// fields. kafka-protocol reads any marker other than 1 as null; this walk refuses all but -1 and 1.
    Opt(&'static [F]),
}

use F::*;

mod layouts;

use layouts::{layout, NO_TAGS};

/// The memory one unknown tagged field takes once decoded: its map entry (an `i32` and a `Bytes`)
/// with its share of the B-tree's node.
const UNKNOWN_TAG_BYTES: usize = 64;

/// Whether shipper can check bodies of this API version (and so may use it).
pub fn is_checked(api: ApiKey, version: i16) -> bool {
    layout(api, version).is_some()
}

/// Checks a response body (after its header) against the layout of `api` at `version`. Returns an
/// estimate of the memory kafka-protocol will take to decode it (its structs and vectors), so that a
/// response small on the wire but describing millions of elements can be refused before decoding.
pub fn check_body(api: ApiKey, version: i16, body: &[u8]) -> Result<usize, String> {
    let l = layout(api, version)
        .ok_or_else(|| format!("{api:?} v{version} responses are not supported by shipper"))?;
    let mut b = body;
    let mut decoded = struct_bytes(l);
    walk(&mut b, l, &mut decoded)?;
    if !b.is_empty() {
        return Err(format!("{} unexpected bytes after the body", b.len()));
    }
    Ok(decoded)
}

/// Checks a flexible response header (v1: correlation id + tagged fields); returns its length.
pub fn check_header_v1(frame: &[u8]) -> Result<usize, String> {
    let mut b = frame;
    walk(&mut b, &[I32, NO_TAGS], &mut 0)?;
    Ok(frame.len() - b.len())
}

/// Bytes one decoded element of this layout takes in kafka-protocol's structs: scalars in 8, byte
/// strings as `Bytes` (32), vectors (24) and tagged-field maps (24); what they point to is counted as
/// the walk meets it.
fn struct_bytes(layout: &[F]) -> usize {
    layout
        .iter()
        .map(|f| match f {
            I8 | I16 | I32 | I64 => 8,
            Uuid => 16,
            Str | Str16 | Bytes => 32,
            Arr(_) | Arr32(_) | Tags(_) => 24,
            // An `Option<struct>` sits inline, whether present or not.
            Opt(l) => struct_bytes(l),
        })
        .sum()
}

fn take<'a>(b: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if n > b.len() {
        return Err(format!(
            "{what} of {n} bytes runs past the end ({} left)",
            b.len()
        ));
    }
    let (a, rest) = b.split_at(n);
    *b = rest;
    Ok(a)
}

/// An unsigned varint read exactly as kafka-protocol reads it: at most 5 bytes into a u32, bits past 32
/// dropped, a 5th byte ending it whatever its continuation bit. Any other reading would let the two walks
/// part ways on hostile input (found by the response fuzz target).
fn uvarint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v: u32 = 0;
    for i in 0..5 {
        let byte = *take(b, 1, "varint")?.first().unwrap_or(&0);
        v |= ((byte & 0x7f) as u32) << (7 * i);
        if byte < 0x80 {
            break;
        }
    }
    Ok(v as u64)
}

fn walk(b: &mut &[u8], layout: &[F], decoded: &mut usize) -> Result<(), String> {
    for f in layout {
        match *f {
            I8 => drop(take(b, 1, "int8")?),
            I16 => drop(take(b, 2, "int16")?),
            I32 => drop(take(b, 4, "int32")?),
            I64 => drop(take(b, 8, "int64")?),
            Uuid => drop(take(b, 16, "uuid")?),
            Str | Bytes => {
                let n = uvarint(b)?;
                if n > 0 {
                    take(b, (n - 1) as usize, "string")?;
                }
            }
            Str16 => {
                let raw = take(b, 2, "string length")?;
                let n = i16::from_be_bytes([raw[0], raw[1]]);
                if n < -1 {
                    return Err(format!("string length {n}"));
                }
                take(b, n.max(0) as usize, "string")?;
            }
            Arr(elem) => {
                let n = uvarint(b)?;
                let count = n.saturating_sub(1);
                if count > b.len() as u64 {
                    return Err(format!("array of {count} elements in {} bytes", b.len()));
                }
                *decoded = decoded.saturating_add(count as usize * struct_bytes(elem));
                for _ in 0..count {
                    walk(b, elem, decoded)?;
                }
            }
            Arr32(elem) => {
                let raw = take(b, 4, "array length")?;
                let n = i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
                if n < -1 || n as i64 > b.len() as i64 {
                    return Err(format!("array of {n} elements in {} bytes", b.len()));
                }
                *decoded = decoded.saturating_add(n.max(0) as usize * struct_bytes(elem));
                for _ in 0..n.max(0) {
                    walk(b, elem, decoded)?;
                }
            }
            Opt(fields) => {
                let marker = take(b, 1, "struct marker")?[0] as i8;
                match marker {
                    -1 => {}
                    1 => walk(b, fields, decoded)?,
                    m => return Err(format!("nullable struct marker {m} (not -1 or 1)")),
                }
            }
            Tags(known) => {
                let n = uvarint(b)?;
                if n > b.len() as u64 {
                    return Err(format!("{n} tagged fields in {} bytes", b.len()));
                }
                for _ in 0..n {
                    let tag = uvarint(b)?;
                    let size = uvarint(b)?;
                    let mut content = take(b, size as usize, "tagged field")?;
                    if let Some((_, l)) = known.iter().find(|(t, _)| *t == tag) {
                        // kafka-protocol decodes a known tag's struct from the main buffer, not from a
                        // slice of `size` bytes: the content must fill its size exactly, or the two
                        // readers would part ways (found by the response fuzz target).
                        *decoded = decoded.saturating_add(struct_bytes(l));
                        walk(&mut content, l, decoded)?;
                        if !content.is_empty() {
                            return Err(format!(
                                "tagged field {tag} has {} bytes past its content",
                                content.len()
                            ));
                        }
                    } else {
                        // kafka-protocol keeps an unknown tag in a BTreeMap entry (its number and
                        // a Bytes): millions of empty ones fit in a frame.
                        *decoded = decoded.saturating_add(UNKNOWN_TAG_BYTES);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
