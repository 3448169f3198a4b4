//! Apply / invert at d = 64, 128 over 4096 tokens at scattered positions (an evicted cache),
//! with per-row angles, with a precomputed table, and the f64 reference.
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nq_rope::{Rope, RopeConfig, RopeLayout, reference};

const TOKENS: usize = 4096;
const REFERENCE_TOKENS: usize = 256;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// Increasing positions with gaps, up to about 1M.
fn positions(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| i * 241 + (i * i) % 97).collect()
}

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect()
}

fn layouts() -> [(&'static str, RopeLayout); 2] {
    [("split_half", RopeLayout::SplitHalf), ("interleaved", RopeLayout::Interleaved)]
}

fn id(d: usize, t: usize, layout: &str) -> BenchmarkId {
    BenchmarkId::from_parameter(format!("d={d},t={t},layout={layout}"))
}

fn direct(c: &mut Criterion, group: &str, invert: bool) {
    let mut g = c.benchmark_group(group);
    let pos = positions(TOKENS);
    for d in [64, 128] {
        for (name, layout) in layouts() {
            let rope = Rope::new(RopeConfig::new(d, 500_000.0).with_layout(layout)).expect("valid");
            let mut buf = data(TOKENS * d);
            g.throughput(Throughput::Elements((TOKENS * d) as u64));
            g.bench_function(id(d, TOKENS, name), |b| {
                b.iter(|| {
                    let x = black_box(&mut buf);
                    if invert { rope.invert(x, &pos) } else { rope.apply(x, &pos) }.expect("shape")
                });
            });
        }
    }
    g.finish();
}

fn apply(c: &mut Criterion) {
    direct(c, "cpu_rope_apply_f32", false);
}

fn invert(c: &mut Criterion) {
    direct(c, "cpu_rope_invert_f32", true);
}

/// Rotation only: cos/sin precomputed once (shared by heads and layers).
fn table(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_rope_apply_table_f32");
    let pos = positions(TOKENS);
    for d in [64, 128] {
        for (name, layout) in layouts() {
            let rope = Rope::new(RopeConfig::new(d, 500_000.0).with_layout(layout)).expect("valid");
            let table = rope.table(&pos);
            let mut buf = data(TOKENS * d);
            g.throughput(Throughput::Elements((TOKENS * d) as u64));
            g.bench_function(id(d, TOKENS, name), |b| {
                b.iter(|| rope.apply_table(black_box(&mut buf), &table).expect("shape"));
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("cpu_rope_table_f32");
    for d in [64, 128] {
        let rope = Rope::new(RopeConfig::new(d, 500_000.0)).expect("valid");
        g.throughput(Throughput::Elements((TOKENS * d) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("d={d},t={TOKENS}")), |b| {
            b.iter(|| rope.table(black_box(&pos)));
        });
    }
    g.finish();
}

fn naive(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference_rope_apply_f32");
    let pos = positions(REFERENCE_TOKENS);
    for d in [64, 128] {
        let cfg = RopeConfig::new(d, 500_000.0);
        let mut buf = data(REFERENCE_TOKENS * d);
        g.throughput(Throughput::Elements((REFERENCE_TOKENS * d) as u64));
        g.bench_function(id(d, REFERENCE_TOKENS, "split_half"), |b| {
            b.iter(|| reference::apply(&cfg, black_box(&mut buf), &pos).expect("shape"));
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = apply, invert, table, naive
}
