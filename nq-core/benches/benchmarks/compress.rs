//! Compressing the cache of a 2,000-token SmolLM2 prefix (30 layers x 3 kv heads x 64, K and
//! V: 23 M values) on one core, per preset: `scores=prefill` with the window's attention
//! handed over by the model (what nq-candle does), `scores=queries` recomputing it from the 128
//! window queries.

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use nq_core::{CompressionConfig, EvictConfig, Preset};

use super::{SMOLLM2, filled};

fn compress(c: &mut Criterion) {
    let t = 2000;
    let values = 2 * SMOLLM2.layers * SMOLLM2.kv_heads * t * SMOLLM2.head_dim;
    let mut g = c.benchmark_group("cpu_compress_f32");
    g.throughput(Throughput::Elements(values as u64));
    g.sample_size(10);
    let quant_only = CompressionConfig {
        evict: EvictConfig { keep: 1.0, ..CompressionConfig::default().evict },
        ..CompressionConfig::default()
    };
    let configs = [
        ("high", Preset::High.config()),
        ("balanced", Preset::Balanced.config()),
        ("max", Preset::Max.config()),
        ("quant-only", quant_only),
    ];
    for ((name, cfg), scores) in configs
        .into_iter()
        .map(|c| (c, "prefill"))
        .chain([(("balanced", Preset::Balanced.config()), "queries")])
    {
        let cache = filled(SMOLLM2, cfg, t, scores == "prefill");
        g.bench_function(
            criterion::BenchmarkId::from_parameter(format!("preset={name},t={t},scores={scores}")),
            |b| {
                b.iter_batched(
                    || cache.clone(),
                    |mut c| c.compress().expect("compresses"),
                    BatchSize::LargeInput,
                );
            },
        );
    }
    g.finish();
}

criterion_group!(benches, compress);
