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

/// The in-place decode step (the tensors' device memory handed to the cache, no host copy)
/// against the host path on the same GPU storage (`host_steps`): one sequence gives the
/// same logits bit for bit over 100 steps with decode-time blocks compressed (the same
/// kernels read the same inputs; f32 -> f16 rounds to nearest even on both sides); a batch
/// of two, attended in one launch against one call per sequence, within the bounds of the
/// test above (2^-6 of the largest logit at the worst step, 2^-9 at the median): the launch
/// splits the contexts by the longest one and each split rounds its softmax weights to f16
/// against its own maximum, an attention error of the same size as the GPU's against the
/// host's.
#[test]
fn in_place_steps_match_host_steps() {
    let Some(dev) = gpu() else { return };
    let config = ModelConfig::llama_shaped(2, 8, 2, 64, 256, 512, 300, 4096);
    let model = Model::synthetic(config, &dev, SyntheticWeights::F16, 6).unwrap();
    let cfg = Preset::Balanced.config();
    let new = |host_steps: bool| {
        CompressedKvCache::on_device(&dev, model.config(), cfg).unwrap().host_steps(host_steps)
    };
    let prompt: Vec<u32> = (0..400u32).map(|i| (i * 13 + 5) % 300).collect();
    let (mut fast, mut slow) = (new(false), new(true));
    for c in [&mut fast, &mut slow] {
        model.forward_last(&prompt, 0, c).unwrap();
        c.compress().unwrap();
    }
    for step in 0..100 {
        let (tok, pos) = (prompt[(step * 5) % prompt.len()], prompt.len() + step);
        let a = model.forward_last(&[tok], pos, &mut fast).unwrap();
        let b = model.forward_last(&[tok], pos, &mut slow).unwrap();
        assert_eq!(max_abs(&(&a - &b).unwrap()), 0.0, "step {step}: one sequence differs");
        fast.compress().unwrap();
        slow.compress().unwrap();
    }
    assert_eq!(fast.stats(), slow.stats());

    let lens = [200usize, 333];
    let mut fast = [new(false), new(false)];
    let mut slow = [new(true), new(true)];
    for (i, &n) in lens.iter().enumerate() {
        for c in [&mut fast[i], &mut slow[i]] {
            model.forward_last(&prompt[..n], 0, c).unwrap();
            c.compress().unwrap();
        }
    }
    let mut rel = Vec::new();
    for step in 0..80 {
        let toks = [prompt[step % 400], prompt[(step * 3) % 400]];
        let pos = [lens[0] + step, lens[1] + step];
        let [f0, f1] = &mut fast;
        let a = model.forward_batch_last(&toks, &pos, &mut [f0, f1]).unwrap();
        let [s0, s1] = &mut slow;
        let b = model.forward_batch_last(&toks, &pos, &mut [s0, s1]).unwrap();
        rel.push(max_abs(&(&a - &b).unwrap()) / max_abs(&b));
        for c in fast.iter_mut().chain(slow.iter_mut()) {
            c.compress().unwrap();
        }
    }
    let worst = rel.iter().copied().fold(0.0f32, f32::max);
    rel.sort_by(f32::total_cmp);
    let median = rel[rel.len() / 2];
    eprintln!(
        "batch of 2, in one launch against one call each: worst step {worst:.2e}, median \
         {median:.2e}"
    );
    assert!(worst <= 1.0 / 64.0, "batch of 2: worst step {worst:e}");
    assert!(median <= 1.0 / 512.0, "batch of 2: median step {median:e}");
    for (f, s) in fast.iter().zip(&slow) {
        assert_eq!(f.stats(), s.stats());
    }
}
