//! Every error a caller's data can cause is a typed `Err`, never a panic.

use nq_core::{CompressedCache, CompressionConfig, Error, EvictConfig, KvShape, Preset};

const SHAPE: KvShape = KvShape { layers: 2, q_heads: 4, kv_heads: 2, head_dim: 64 };

#[test]
fn bad_shapes() {
    let cfg = Preset::Balanced.config();
    for shape in [
        KvShape { head_dim: 60, ..SHAPE },
        KvShape { q_heads: 3, ..SHAPE },
        KvShape { layers: 0, ..SHAPE },
    ] {
        assert!(
            matches!(CompressedCache::new(shape, cfg, None), Err(Error::Shape { .. })),
            "{shape:?}"
        );
    }
}

#[test]
fn bad_config() {
    let base = CompressionConfig::default();
    for cfg in [
        CompressionConfig { evict: EvictConfig { keep: 0.0, ..base.evict }, ..base },
        CompressionConfig { evict: EvictConfig { keep: f32::NAN, ..base.evict }, ..base },
        CompressionConfig { keys: nq_core::Storage::E8 { bits: 5 }, ..base },
        CompressionConfig { block: 0, ..base },
        CompressionConfig { evict: EvictConfig { pool_kernel: 0, ..base.evict }, ..base },
        CompressionConfig { evict: EvictConfig { pool_kernel: 6, ..base.evict }, ..base },
        CompressionConfig { remove_rope: true, ..base },
    ] {
        assert!(
            matches!(CompressedCache::new(SHAPE, cfg, None), Err(Error::Config { .. })),
            "{cfg:?}"
        );
    }
    assert!(matches!("fast".parse::<Preset>(), Err(Error::UnknownPreset { .. })));
}

#[test]
fn bad_appends() {
    let mut cache = CompressedCache::new(SHAPE, Preset::Balanced.config(), None).unwrap();
    let row = vec![0.5f32; 2 * 64];
    assert!(matches!(cache.append(2, &row, &row, &[0]), Err(Error::Layer { layer: 2, .. })));
    assert!(matches!(cache.append(0, &row[1..], &row, &[0]), Err(Error::Len { .. })));
    let mut nan = row.clone();
    nan[5] = f32::NAN;
    assert!(matches!(cache.append(0, &row, &nan, &[0]), Err(Error::NonFinite { index: 5, .. })));
    cache.append(0, &row, &row, &[7]).unwrap();
    assert!(matches!(
        cache.append(0, &row, &row, &[7]),
        Err(Error::Position { got: 7, last: 7, .. })
    ));
    let mut out = vec![0f32; 4 * 64];
    assert!(matches!(
        cache.attend(0, &out.clone(), &[8, 9], None, &mut out),
        Err(Error::Len { .. })
    ));
}
