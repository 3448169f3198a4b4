//! Scoring throughput: tokens of one (layer, kv head) unit per second, window 32, group 3.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nq_evict::{ExpectedAttention, KeyKey, KeyNorm, ObservedAttention, Scorer, reference};

use super::data::{GROUP, Unit, WINDOW};

fn group_of<S: Scorer>(c: &mut Criterion, name: &str, scorer: &S, sizes: &[(usize, usize)]) {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for &(t, d) in sizes {
        let unit = Unit::new(t, d);
        let mut out = vec![0.0f32; t];
        g.throughput(Throughput::Elements(t as u64));
        let id = format!("d={d},t={t},w={WINDOW},group={GROUP}");
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| scorer.score(black_box(&unit.input()), &mut out).expect("bench input"));
        });
    }
    g.finish();
}

const SIZES: &[(usize, usize)] =
    &[(2048, 64), (8192, 64), (32768, 64), (2048, 128), (8192, 128), (32768, 128)];

fn observed(c: &mut Criterion) {
    group_of(c, "cpu_observed_f32", &ObservedAttention::default(), SIZES);
}

fn expected(c: &mut Criterion) {
    group_of(c, "cpu_expected_f32", &ExpectedAttention::default(), SIZES);
}

fn key_norm(c: &mut Criterion) {
    group_of(c, "cpu_keynorm_f32", &KeyNorm, SIZES);
}

fn key_key(c: &mut Criterion) {
    // O(t^2 d): 2K tokens only
    group_of(c, "cpu_keykey_f32", &KeyKey, &[(2048, 64), (2048, 128)]);
}

fn reference_observed(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference_observed_f32");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let (t, d) = (2048, 64);
    let unit = Unit::new(t, d);
    let cfg = ObservedAttention::default();
    g.throughput(Throughput::Elements(t as u64));
    g.bench_function(
        BenchmarkId::from_parameter(format!("d={d},t={t},w={WINDOW},group={GROUP}")),
        |b| {
            b.iter(|| {
                reference::observed_attention(black_box(&unit.input()), &cfg).expect("bench input")
            });
        },
    );
    g.finish();
}

criterion_group!(benches, observed, expected, key_norm, key_key, reference_observed);
