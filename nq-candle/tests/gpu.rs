//! The compressed cache on the GPU (`nq_cuda::CudaBackend`, on candle's stream) against the
//! same cache in host memory, through a whole model on the GPU (feature `cuda`; a test
//! binary built with it and run on a machine without a GPU skips, unless `NQ_REQUIRE_GPU`
//! is set).

use candle_core::{Device, Tensor};
use nq_candle::{CompressedKvCache, Model, ModelConfig, SyntheticWeights};
use nq_core::Preset;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("NQ_REQUIRE_GPU").is_some() => {
            panic!("NQ_REQUIRE_GPU is set but there is no CUDA device: {e}")
        }
        Err(e) => {
            eprintln!("SKIP: no CUDA device: {e}");
            None
        }
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// A 2-layer random Llama (GQA 4, head_dim 64) on the GPU: a 400-token prompt prefilled into
/// both caches (dense attention, identical), compressed, then 100 teacher-forced decode steps
/// (decode-time blocks compressed as they leave the recent window) with every step's logits
/// compared.
///
/// The tolerance: the device's attention equals the exact attention over its stored form
/// within the bound nq-core's conformance harness derives (the query rounded to f16,
/// relative 2^-11 per element; weights times value scales rounded to f16), about 2^-10 of
/// the output's scale; the host's is exact to f32. Two layers and the head of a random model
/// with weights of variance 1/n carry a relative perturbation through at about its size,
/// and later keys and values inherit it, so codes on a decision boundary may flip: the test
/// allows 2^-6 of the largest logit per step (16x the attention's own bound) and 2^-9 for
/// the median step.
#[test]
fn logits_with_the_gpu_cache_match_the_host_cache() {
    let Some(dev) = gpu() else { return };
    let config = ModelConfig::llama_shaped(2, 8, 2, 64, 256, 512, 300, 4096);
    let model = Model::synthetic(config, &dev, SyntheticWeights::F16, 5).unwrap();
    let prompt: Vec<u32> = (0..400u32).map(|i| (i * 37 + 11) % 300).collect();
    for preset in [Preset::High, Preset::Balanced, Preset::Max] {
        let cfg = preset.config();
        let mut host = CompressedKvCache::new(model.config(), cfg).unwrap();
        let mut device = CompressedKvCache::on_device(&dev, model.config(), cfg).unwrap();
        let a = model.forward_last(&prompt, 0, &mut host).unwrap();
        let b = model.forward_last(&prompt, 0, &mut device).unwrap();
        assert_eq!(max_abs(&(&a - &b).unwrap()), 0.0, "{preset:?}: the prefill differs");
        host.compress().unwrap();
        device.compress().unwrap();
        let mut rel = Vec::new();
        for step in 0..100 {
            let tok = prompt[(step * 7) % prompt.len()];
            let pos = prompt.len() + step;
            let a = model.forward_last(&[tok], pos, &mut host).unwrap();
            let b = model.forward_last(&[tok], pos, &mut device).unwrap();
            rel.push(max_abs(&(&a - &b).unwrap()) / max_abs(&a));
            host.compress().unwrap();
            device.compress().unwrap();
        }
        let (hs, ds) = (host.stats(), device.stats());
        assert_eq!(
            (hs.compressed_slots, hs.dense_slots, hs.evicted_slots),
            (ds.compressed_slots, ds.dense_slots, ds.evicted_slots),
            "{preset:?}: the caches hold different slots"
        );
        let worst = rel.iter().copied().fold(0.0f32, f32::max);
        let mut sorted = rel.clone();
        sorted.sort_by(f32::total_cmp);
        let median = sorted[sorted.len() / 2];
        eprintln!(
            "{preset:?}: logits relative to the largest: worst step {worst:.2e}, median {median:.2e} \
             ({} compressed slots)",
            ds.compressed_slots
        );
        assert!(worst <= 1.0 / 64.0, "{preset:?}: worst step {worst:e}");
        assert!(median <= 1.0 / 512.0, "{preset:?}: median step {median:e}");
    }
}
