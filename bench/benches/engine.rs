//! Criterion micro-benchmarks of the sans-IO engine, through the crate's
//! `internals` feature, against the peers' public equivalents or a plain
//! reference:
//!
//! - `unmask/{size}`: our word-at-a-time `apply_mask`, the byte-at-a-time
//!   `apply_mask_reference`, and fastwebsockets' public `unmask`. That one
//!   is tungstenite's `apply_mask_fast32` (fastwebsockets' source says so);
//!   tungstenite's own `apply_mask` lives in a private module and cannot be
//!   called, so the fastwebsockets line stands for both.
//! - `utf8/{size}`: validating a whole multi-byte text message: ours,
//!   `std::str::from_utf8` and `simdutf8::basic::from_utf8`; and ours fed in
//!   7-byte pieces, as a fragmented message or a trickling socket delivers
//!   it.
//! - `header`: parsing masked client frame headers of all three length
//!   forms, and encoding server frame headers.
//!
//! ```text
//! cargo bench -p tower-websockets-bench --bench engine
//! cargo bench -p tower-websockets-bench --bench engine -- --quick
//! ```

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tower_websockets::internals;

const MASK: [u8; 4] = [0x5a, 0xc3, 0x96, 0x3f];
const SIZES: [usize; 3] = [16, 1024, 64 * 1024];
const TEXT_PATTERN: &str = "héllo wörld €𝄞 ";

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in SIZES {
        let mut buf: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ours", size), &size, |b, _| {
            b.iter(|| internals::apply_mask(black_box(&mut buf), black_box(MASK), 0));
        });
        group.bench_with_input(BenchmarkId::new("reference", size), &size, |b, _| {
            b.iter(|| internals::apply_mask_reference(black_box(&mut buf), black_box(MASK), 0));
        });
        group.bench_with_input(BenchmarkId::new("fastwebsockets", size), &size, |b, _| {
            b.iter(|| fastwebsockets::unmask(black_box(&mut buf), black_box(MASK)));
        });
    }
    group.finish();
}

/// Valid multi-byte UTF-8 of exactly `size` bytes.
fn text(size: usize) -> Vec<u8> {
    let mut text = TEXT_PATTERN.repeat(size / TEXT_PATTERN.len() + 1);
    let mut cut = size;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    while text.len() < size {
        text.push('.');
    }
    text.into_bytes()
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for size in [1024, 64 * 1024] {
        let text = text(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ours", size), &text, |b, text| {
            b.iter(|| {
                let mut v = internals::Utf8Validator::new();
                assert!(v.feed(black_box(text)) && v.finish());
            });
        });
        group.bench_with_input(BenchmarkId::new("std", size), &text, |b, text| {
            b.iter(|| assert!(std::str::from_utf8(black_box(text)).is_ok()));
        });
        group.bench_with_input(BenchmarkId::new("simdutf8", size), &text, |b, text| {
            b.iter(|| assert!(simdutf8::basic::from_utf8(black_box(text)).is_ok()));
        });
        group.bench_with_input(
            BenchmarkId::new("ours-7-byte-pieces", size),
            &text,
            |b, text| {
                b.iter(|| {
                    let mut v = internals::Utf8Validator::new();
                    for piece in black_box(text).chunks(7) {
                        assert!(v.feed(piece));
                    }
                    assert!(v.finish());
                });
            },
        );
    }
    group.finish();
}

/// A masked client frame header for a binary frame of `len` bytes.
fn client_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x82];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&MASK);
    h
}

fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("header");
    for (name, len) in [("7-bit", 16u64), ("16-bit", 16 * 1024), ("64-bit", 1 << 20)] {
        let bytes = client_header(len);
        group.bench_with_input(BenchmarkId::new("parse", name), &bytes, |b, bytes| {
            b.iter(|| {
                let parsed = internals::parse_header(black_box(bytes));
                assert!(matches!(parsed, Ok(Some(_))));
                parsed
            });
        });
        group.bench_with_input(BenchmarkId::new("encode", name), &len, |b, &len| {
            let mut out = [0; 14];
            b.iter(|| internals::encode_header(&mut out, true, 0x2, black_box(len)));
        });
    }
    group.finish();
}

criterion_group!(benches, unmask, utf8, header);
criterion_main!(benches);
