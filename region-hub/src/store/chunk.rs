//! Chunk files: the immutable, compressed data files of one time partition.
//!
//! ```text
//! "STCHUNK1"                                  8-byte magic
//! block*                                       lz4 (size-prepended) bincode Vec<TelemetryRecord>
//! footer                                       bincode FileIndex: per block tenant, device,
//!                                              offset, len, record count, ts range, crc32
//! footer_len: u32 LE | footer_crc: u32 LE | "STCHEND1"
//! ```
//!
//! A block holds at most [`BLOCK_RECORDS`] records of one (tenant, device),
//! in no particular order (queries sort), with their time range in the
//! footer, so a query reads only the blocks of its device whose range
//! overlaps, and decompressing one block has a bounded cost. A device may
//! have many blocks in one file: merging copies blocks verbatim (see
//! `merge`). The footer is read once at open; after that the index lives in
//! memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};
use strata_protocol::TelemetryRecord;

use super::StoreError;

const HEAD_MAGIC: &[u8; 8] = b"STCHUNK1";
const TAIL_MAGIC: &[u8; 8] = b"STCHEND1";
const TRAILER_LEN: u64 = 16;
/// Most records in one block.
pub(super) const BLOCK_RECORDS: usize = 4096;
/// Largest decompressed block accepted (512 MiB): 4096 records of the largest
/// allowed payload fit; a corrupt size prefix cannot allocate more.
const MAX_BLOCK_BYTES: usize = 512 << 20;
/// Largest footer accepted (256 MiB).
const MAX_FOOTER_BYTES: u64 = 256 << 20;

/// Where one block lives and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct BlockEntry {
    pub tenant: String,
    pub device: String,
    pub offset: u64,
    pub len: u32,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub crc: u32,
}

/// A chunk file's footer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct FileIndex {
    pub partition: i64,
    pub blocks: Vec<BlockEntry>,
}

/// The file name of chunk `id`.
pub(super) fn chunk_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.chunk"))
}

/// Parses a chunk file name back into its id.
pub(super) fn chunk_id(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".chunk")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Deterministic total order for records of one device: time, then device
/// seq, then contents, so every replica returns ties in the same order
/// whatever its chunk layout.
pub(super) fn record_order(a: &TelemetryRecord, b: &TelemetryRecord) -> std::cmp::Ordering {
    a.ts_ms
        .cmp(&b.ts_ms)
        .then(a.seq.cmp(&b.seq))
        .then_with(|| {
            let ma = a
                .metrics
                .iter()
                .map(|m| (m.name.as_str(), m.value.to_bits()));
            let mb = b
                .metrics
                .iter()
                .map(|m| (m.name.as_str(), m.value.to_bits()));
            ma.cmp(mb)
        })
        .then_with(|| {
            let ta = a.tags.iter().map(|t| (t.key.as_str(), t.value.as_str()));
            let tb = b.tags.iter().map(|t| (t.key.as_str(), t.value.as_str()));
            ta.cmp(tb)
        })
        .then_with(|| (&a.tenant, &a.device).cmp(&(&b.tenant, &b.device)))
}

/// The bincode configuration of blocks, memtables and footers.
pub(super) const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// Compresses one block.
#[cfg(test)]
pub(super) fn encode_block(records: &[TelemetryRecord]) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail.
    let raw = bincode::encode_to_vec(records, BINCODE).unwrap_or_default();
    lz4_flex::compress_prepend_size(&raw)
}

/// Compresses `count` records already encoded back to back in `body`. A
/// bincode `Vec<T>` is its length (a varint) followed by the elements, so
/// the result is byte for byte what [`decode_block`] reads.
pub(super) fn raw_block(count: u32, body: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(body.len() + 9);
    // Encoding an integer into a Vec cannot fail.
    let _ = bincode::encode_into_std_write(u64::from(count), &mut raw, BINCODE);
    raw.extend_from_slice(body);
    lz4_flex::compress_prepend_size(&raw)
}

/// Decompresses one block into its record count and its records' encoded
/// bytes (the inverse of [`raw_block`]), without decoding any record.
pub(super) fn block_body(bytes: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let mut raw = decompress(bytes)?;
    let (count, used): (u64, usize) =
        bincode::decode_from_slice(&raw, BINCODE).map_err(|e| e.to_string())?;
    raw.drain(..used);
    Ok((count, raw))
}

fn decompress(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let size = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("block shorter than its size prefix")?;
    if size > MAX_BLOCK_BYTES {
        return Err(format!(
            "block claims {size} bytes, limit {MAX_BLOCK_BYTES}"
        ));
    }
    lz4_flex::decompress_size_prepended(bytes).map_err(|e| e.to_string())
}

/// Decompresses one block (whose integrity the caller has checked).
pub(super) fn decode_block(bytes: &[u8]) -> Result<Vec<TelemetryRecord>, String> {
    let raw = decompress(bytes)?;
    let cfg = BINCODE.with_limit::<MAX_BLOCK_BYTES>();
    let (records, used): (Vec<TelemetryRecord>, usize) =
        bincode::decode_from_slice(&raw, cfg).map_err(|e| e.to_string())?;
    if used != raw.len() {
        return Err(format!("{} trailing bytes in block", raw.len() - used));
    }
    Ok(records)
}

/// Writes one chunk file, device by device, then fsyncs it.
pub(super) struct ChunkWriter {
    path: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    index: FileIndex,
}

impl ChunkWriter {
    /// Creates the file (replacing a leftover of the same name).
    pub fn create(path: PathBuf, partition: i64) -> Result<Self, StoreError> {
        // 0600 from creation: tenants' telemetry.
        let file = strata_net::files::create_private(&path).map_err(|e| io_err(&path)(e.into()))?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        out.write_all(HEAD_MAGIC).map_err(io_err(&path))?;
        Ok(ChunkWriter {
            path,
            out,
            pos: HEAD_MAGIC.len() as u64,
            index: FileIndex {
                partition,
                blocks: Vec::new(),
            },
        })
    }

    /// Appends an already-compressed block.
    pub fn add_raw_block(
        &mut self,
        tenant: &str,
        device: &str,
        bytes: &[u8],
        count: u32,
        min_ts: i64,
        max_ts: i64,
    ) -> Result<(), StoreError> {
        let len = u32::try_from(bytes.len()).map_err(|_| {
            corrupt(
                &self.path,
                format!("block of {} bytes is too large", bytes.len()),
            )
        })?;
        self.out.write_all(bytes).map_err(io_err(&self.path))?;
        self.index.blocks.push(BlockEntry {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            offset: self.pos,
            len,
            count,
            min_ts,
            max_ts,
            crc: crc32fast::hash(bytes),
        });
        self.pos += u64::from(len);
        Ok(())
    }

    /// Writes the footer and fsyncs. Returns the index and the file size.
    pub fn finish(mut self) -> Result<(FileIndex, u64), StoreError> {
        let footer = bincode::encode_to_vec(&self.index, BINCODE).unwrap_or_default();
        let footer_len =
            u32::try_from(footer.len()).map_err(|_| corrupt(&self.path, "footer too large"))?;
        let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
        trailer.extend_from_slice(&footer_len.to_le_bytes());
        trailer.extend_from_slice(&crc32fast::hash(&footer).to_le_bytes());
        trailer.extend_from_slice(TAIL_MAGIC);
        self.out.write_all(&footer).map_err(io_err(&self.path))?;
        self.out.write_all(&trailer).map_err(io_err(&self.path))?;
        let file = self.out.into_inner().map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.path))?;
        let size = self.pos + u64::from(footer_len) + TRAILER_LEN;
        Ok((self.index, size))
    }
}

fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(
                path,
                format!("truncated: cannot read {len} bytes at offset {offset}"),
            )
        } else {
            StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    Ok(buf)
}

/// Reads and checks a chunk file's footer.
pub(super) fn read_index(path: &Path) -> Result<FileIndex, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    if size < HEAD_MAGIC.len() as u64 + TRAILER_LEN {
        return Err(corrupt(
            path,
            format!("only {size} bytes, too short for a chunk file"),
        ));
    }
    if read_at(&file, path, 0, HEAD_MAGIC.len())? != HEAD_MAGIC {
        return Err(corrupt(path, "not a chunk file (bad magic)"));
    }
    let trailer = read_at(&file, path, size - TRAILER_LEN, TRAILER_LEN as usize)?;
    if &trailer[8..16] != TAIL_MAGIC {
        return Err(corrupt(
            path,
            "bad trailer magic: the file is torn or not a chunk file",
        ));
    }
    let footer_len = u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ]));
    let footer_crc = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if footer_len > MAX_FOOTER_BYTES || footer_len + TRAILER_LEN + 8 > size {
        return Err(corrupt(
            path,
            format!("footer length {footer_len} does not fit the file"),
        ));
    }
    let footer = read_at(
        &file,
        path,
        size - TRAILER_LEN - footer_len,
        footer_len as usize,
    )?;
    if crc32fast::hash(&footer) != footer_crc {
        return Err(corrupt(path, "footer checksum mismatch"));
    }
    let cfg = BINCODE.with_limit::<{ MAX_FOOTER_BYTES as usize }>();
    let (index, _): (FileIndex, usize) = bincode::decode_from_slice(&footer, cfg)
        .map_err(|e| corrupt(path, format!("footer: {e}")))?;
    let data_end = size - TRAILER_LEN - footer_len;
    for b in &index.blocks {
        if b.offset < 8 || b.offset + u64::from(b.len) > data_end {
            return Err(corrupt(
                path,
                format!("block at offset {} lies outside the data area", b.offset),
            ));
        }
    }
    Ok(index)
}

/// Reads one block's compressed bytes and checks its CRC.
pub(super) fn read_block_raw(
    file: &File,
    path: &Path,
    offset: u64,
    len: u32,
    crc: u32,
) -> Result<Vec<u8>, StoreError> {
    let bytes = read_at(file, path, offset, len as usize)?;
    if crc32fast::hash(&bytes) != crc {
        return Err(corrupt(
            path,
            format!("checksum mismatch in block at offset {offset}"),
        ));
    }
    Ok(bytes)
}

/// Reads, checks and decodes one block.
pub(super) fn read_block(
    file: &File,
    path: &Path,
    offset: u64,
    len: u32,
    crc: u32,
) -> Result<Vec<TelemetryRecord>, StoreError> {
    let bytes = read_block_raw(file, path, offset, len, crc)?;
    decode_block(&bytes).map_err(|d| corrupt(path, format!("block at offset {offset}: {d}")))
}

/// Opens a chunk file for reading.
pub(super) fn open(path: &Path) -> Result<File, StoreError> {
    File::open(path).map_err(io_err(path))
}
