//! Every `Error` variant is reachable, names its operation and values, and leaves the input
//! untouched.
use nq_rope::{Error, Rope, RopeConfig, RopeScaling, reference};

fn err(cfg: RopeConfig) -> Error {
    let e = Rope::new(cfg).expect_err("invalid config");
    // Debug text, since a NaN value makes the variants compare unequal.
    let naive = reference::inv_freqs(&cfg).expect_err("invalid config");
    assert_eq!(format!("{naive:?}"), format!("{e:?}"), "reference validates the same way");
    e
}

#[test]
fn head_dim() {
    assert_eq!(err(RopeConfig::new(0, 1e4)), Error::HeadDim { op: "RopeConfig::validate", got: 0 });
}

#[test]
fn rotary_dim() {
    let base = RopeConfig::new(64, 1e4);
    for r in [0, 7, 66] {
        let e = err(base.with_rotary_dim(r));
        assert!(
            matches!(e, Error::RotaryDim { rotary_dim, min: 2, head_dim: 64, .. } if rotary_dim == r)
        );
    }
    let ntk = RopeScaling::DynamicNtk { factor: 2.0, original_max_position: 2048, seq_len: 4096 };
    assert!(matches!(
        err(base.with_rotary_dim(2).with_scaling(ntk)),
        Error::RotaryDim { min: 4, .. }
    ));
    assert!(Rope::new(base.with_rotary_dim(2)).is_ok());
}

#[test]
fn params() {
    let base = RopeConfig::new(64, 1e4);
    let name = |cfg: RopeConfig| match err(cfg) {
        Error::Param { name, .. } => name,
        other => panic!("unexpected {other:?}"),
    };
    for theta in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(name(RopeConfig::new(64, theta)), "rope_theta");
    }
    assert_eq!(name(base.with_scaling(RopeScaling::Linear { factor: 0.0 })), "factor");
    let llama = |factor, low_freq_factor, high_freq_factor, original_max_position| {
        base.with_scaling(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        })
    };
    assert_eq!(name(llama(f64::NAN, 1.0, 4.0, 8192)), "factor");
    assert_eq!(name(llama(8.0, 0.0, 4.0, 8192)), "low_freq_factor");
    assert_eq!(name(llama(8.0, 4.0, 4.0, 8192)), "high_freq_factor");
    assert_eq!(name(llama(8.0, 1.0, 4.0, 0)), "original_max_position_embeddings");
    let yarn = |f: &dyn Fn(&mut RopeScaling)| {
        let mut s = RopeScaling::yarn(4.0, 4096);
        f(&mut s);
        base.with_scaling(s)
    };
    macro_rules! set {
        ($field:ident = $v:expr) => {
            yarn(&|s| {
                if let RopeScaling::Yarn { $field, .. } = s {
                    *$field = $v;
                }
            })
        };
    }
    assert_eq!(name(set!(factor = -4.0)), "factor");
    assert_eq!(name(set!(original_max_position = 0)), "original_max_position_embeddings");
    assert_eq!(name(set!(beta_fast = 0.0)), "beta_fast");
    assert_eq!(name(set!(beta_slow = f64::NAN)), "beta_slow");
    assert_eq!(name(set!(mscale = Some(f64::INFINITY))), "mscale");
    assert_eq!(name(set!(mscale_all_dim = Some(f64::NAN))), "mscale_all_dim");
    assert_eq!(name(set!(attention_factor = Some(0.0))), "attention_factor");
    assert_eq!(
        name(RopeConfig::new(64, 1.0).with_scaling(RopeScaling::yarn(4.0, 4096))),
        "rope_theta"
    );
    let ntk = |factor, original_max_position| {
        base.with_scaling(RopeScaling::DynamicNtk { factor, original_max_position, seq_len: 1 })
    };
    assert_eq!(name(ntk(0.0, 2048)), "factor");
    assert_eq!(name(ntk(2.0, 0)), "original_max_position_embeddings");
    let e = err(base.with_scaling(RopeScaling::Linear { factor: -2.0 }));
    assert!(e.to_string().contains("factor = -2"), "{e}");
}

#[test]
fn lengths() {
    let rope = Rope::new(RopeConfig::new(8, 1e4)).unwrap();
    let mut x = vec![1.0f32; 20];
    assert_eq!(
        rope.apply(&mut x, &[1, 2]),
        Err(Error::Len { op: "Rope::apply", got: 20, positions: 2, head_dim: 8 })
    );
    assert!(matches!(rope.invert(&mut x, &[1, 2]), Err(Error::Len { op: "Rope::invert", .. })));
    assert!(matches!(rope.apply_from(&mut x, 0), Err(Error::Len { got: 20, .. })));
    assert!(matches!(rope.invert_from(&mut x, 0), Err(Error::Len { got: 20, .. })));
    assert!(matches!(reference::apply(rope.config(), &mut x, &[1]), Err(Error::Len { .. })));
    assert!(matches!(reference::invert(rope.config(), &mut x, &[1]), Err(Error::Len { .. })));
    assert_eq!(
        rope.apply_row(&mut x, 3),
        Err(Error::RowLen { op: "Rope::apply_row", got: 20, head_dim: 8 })
    );
    assert!(matches!(rope.invert_row(&mut x[..4], 3), Err(Error::RowLen { got: 4, .. })));
    assert!(x.iter().all(|&v| v == 1.0), "input untouched on error");
    assert_eq!(rope.apply(&mut [], &[]), Ok(()));
}

#[test]
fn position_overflow() {
    let rope = Rope::new(RopeConfig::new(8, 1e4)).unwrap();
    let mut x = vec![1.0f32; 16];
    assert_eq!(
        rope.apply_from(&mut x, u32::MAX),
        Err(Error::PositionOverflow { op: "Rope::apply_from", start: u32::MAX, count: 2 })
    );
    assert!(matches!(rope.invert_from(&mut x, u32::MAX), Err(Error::PositionOverflow { .. })));
    // The last position may be u32::MAX itself.
    assert_eq!(rope.apply_from(&mut x, u32::MAX - 1), Ok(()));
}

#[test]
fn mean_rotation() {
    let rope = Rope::new(RopeConfig::new(8, 1e4)).unwrap();
    let mut x = vec![1.0f32; 20];
    assert_eq!(
        rope.apply_mean(&mut x[..16], 5, 0),
        Err(Error::NoPositions { op: "Rope::apply_mean" })
    );
    assert_eq!(
        rope.apply_mean(&mut x, 5, 3),
        Err(Error::Len { op: "Rope::apply_mean", got: 20, positions: 2, head_dim: 8 })
    );
    let cfg = rope.config();
    assert!(matches!(reference::apply_mean(cfg, &mut x, 5, 0), Err(Error::NoPositions { .. })));
    assert!(matches!(reference::apply_mean(cfg, &mut x, 5, 3), Err(Error::Len { .. })));
    assert!(x.iter().all(|&v| v == 1.0), "input untouched on error");
}

#[test]
fn table_mismatch() {
    let rope = Rope::new(RopeConfig::new(8, 1e4)).unwrap();
    let other = Rope::new(RopeConfig::new(8, 1e4).with_rotary_dim(4)).unwrap();
    let mut x = vec![1.0f32; 24];
    let e = rope.apply_table(&mut x, &other.table(&[1, 2, 3])).unwrap_err();
    assert!(matches!(
        e,
        Error::Table { entries: 3, table_pairs: 2, pairs: 4, head_dim: 8, got: 24, .. }
    ));
    let t2 = rope.table(&[1, 2]);
    assert!(matches!(
        rope.invert_table(&mut x, &t2),
        Err(Error::Table { entries: 2, got: 24, .. })
    ));
    let empty = rope.table(&[]);
    assert!(empty.is_empty());
    assert!(matches!(rope.apply_table(&mut x, &empty), Err(Error::Table { entries: 0, .. })));
    assert_eq!(rope.apply_table(&mut [], &empty), Ok(()));
    assert!(x.iter().all(|&v| v == 1.0));
}
