//! Selection throughput: a whole SmolLM2-shaped cache (30 layers x 3 kv heads), 60% eviction.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nq_evict::{Budget, Policy, Shape, Split, select};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_select_f32");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let (layers, heads) = (30usize, 3usize);
    for t in [2048usize, 32768] {
        let mut rng = StdRng::seed_from_u64(1);
        let scores: Vec<f32> = (0..layers * heads * t).map(|_| rng.random::<f32>()).collect();
        let shape = Shape { layers, heads, tokens: t };
        g.throughput(Throughput::Elements((layers * heads * t) as u64));
        for (name, split, pyramid) in [
            ("perhead", Split::PerHead, None),
            ("perlayer", Split::PerLayer, None),
            ("pyramid", Split::PerLayer, Some(2.0)),
            ("global", Split::Global, None),
        ] {
            let policy =
                Policy { budget: Budget::EvictFraction(0.6), split, pyramid, ..Policy::default() };
            let id = format!("t={t},layers={layers},heads={heads},split={name}");
            g.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| select(black_box(&scores), shape, &policy).expect("bench input"));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
