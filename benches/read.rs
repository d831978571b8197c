//! How `tail` reads a file into batches, side by side on the same warm 16 MB file of ~100-byte lines:
//! - `mmap-into-batch`: map a 1 MiB region, split lines in the map, copy each line straight from the
//!   map into the batch (what `tail` does: one copy from the page cache);
//! - `mmap-copy-batch`: map, copy the region into a scratch buffer, then into the batch (round 1);
//! - `pread-batch`: `pread` the region into a scratch buffer, then into the batch.
//!
//! Every variant splits lines with the same splitter and fills the same batches (sealed at 1 MB).
//! Run: `cargo bench --bench read`.

use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shipper::tail::lines::{LineSplitter, Piece};
use shipper::tail::map::Region;
use shipper::wire::records::BatchBuilder;

const FILE_BYTES: usize = 16 * 1024 * 1024;
const CHUNK: usize = 1 << 20;
const BATCH: usize = 1_000_000;

fn make_file() -> (std::path::PathBuf, File) {
    let path = std::env::temp_dir().join(format!("shipper-bench-read-{}", std::process::id()));
    let mut f = File::create(&path).unwrap();
    let mut written = 0;
    let mut i = 0u64;
    while written < FILE_BYTES {
        let mut line = format!(
            "2026-11-27T09:{:02}:{:02} INFO worker-{} handled request id={} status=200 path=/api/v1/items/{}",
            i % 60,
            (i * 7) % 60,
            i % 16,
            i * 7919,
            i * 31
        )
        .into_bytes();
        line.resize(99, b' ');
        line.push(b'\n');
        f.write_all(&line).unwrap();
        written += line.len();
        i += 1;
    }
    f.sync_all().unwrap();
    (path.clone(), File::open(&path).unwrap())
}

/// Splits `data` into lines and pushes them into batches; returns the lines pushed.
fn fill(data: &[u8], batch: &mut BytesMut, builder: &mut Option<BatchBuilder>) -> usize {
    let mut n = 0;
    let mut splitter = LineSplitter::new(1_000_000);
    splitter.split(data, false, |p| {
        if let Piece::Line { bytes, .. } = p {
            let b = builder.get_or_insert_with(|| BatchBuilder::begin(batch, 1));
            if b.len(batch) + bytes.len() + 16 > BATCH {
                batch.clear();
                *b = BatchBuilder::begin(batch, 1);
            }
            b.push(batch, 1, None, Some(bytes), &[]);
            n += 1;
        }
        ControlFlow::Continue(())
    });
    n
}

fn read(c: &mut Criterion) {
    let (path, file) = make_file();
    let len = file.metadata().unwrap().len() as usize;
    let mut g = c.benchmark_group("read-16MB-into-batches");
    g.throughput(Throughput::Bytes(len as u64));
    g.sample_size(20);
    let mut batch = BytesMut::with_capacity(BATCH + 64);
    let mut scratch = vec![0u8; CHUNK];
    g.bench_function("mmap-into-batch", |b| {
        b.iter(|| {
            let (mut off, mut n, mut builder) = (0, 0, None);
            while off < len {
                let l = CHUNK.min(len - off);
                let r = Region::map(&file, off as u64, l).unwrap();
                n += fill(r.bytes(), &mut batch, &mut builder);
                assert!(!r.faulted());
                off += l;
            }
            black_box(n)
        })
    });
    g.bench_function("mmap-copy-batch", |b| {
        b.iter(|| {
            let (mut off, mut n, mut builder) = (0, 0, None);
            while off < len {
                let l = CHUNK.min(len - off);
                let r = Region::map(&file, off as u64, l).unwrap();
                scratch[..l].copy_from_slice(r.bytes());
                n += fill(&scratch[..l], &mut batch, &mut builder);
                off += l;
            }
            black_box(n)
        })
    });
    g.bench_function("pread-batch", |b| {
        b.iter(|| {
            let (mut off, mut n, mut builder) = (0, 0, None);
            while off < len {
                let l = CHUNK.min(len - off);
                file.read_exact_at(&mut scratch[..l], off as u64).unwrap();
                n += fill(&scratch[..l], &mut batch, &mut builder);
                off += l;
            }
            black_box(n)
        })
    });
    g.finish();
    let _ = std::fs::remove_file(path);
}

criterion_group!(benches, read);
criterion_main!(benches);
