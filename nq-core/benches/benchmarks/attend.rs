//! One decode step's attention over a long cache (all 30 layers): the compressed resident
//! form read in place against the f16 cache of every token.

use criterion::{Criterion, Throughput, criterion_group};
use nq_core::Preset;

use super::{SMOLLM2, filled};

fn attend(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_attend_decode_f32");
    g.sample_size(10);
    for t in [2048usize, 8192] {
        g.throughput(Throughput::Elements((SMOLLM2.layers * SMOLLM2.kv_heads * t) as u64));
        for preset in [Preset::None, Preset::High, Preset::Balanced, Preset::Max] {
            let mut cache = filled(SMOLLM2, preset.config(), t, true);
            cache.compress().expect("compresses");
            let q = nq_core::testing::test_rows(SMOLLM2.q_heads, SMOLLM2.head_dim, 7);
            let mut out = vec![0f32; q.len()];
            let pos = [t as u32];
            g.bench_function(
                criterion::BenchmarkId::from_parameter(format!("preset={},t={t}", preset.name())),
                |b| {
                    b.iter(|| {
                        for layer in 0..SMOLLM2.layers {
                            cache.attend(layer, &q, &pos, None, &mut out).expect("attends");
                        }
                    });
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, attend);
