//! The fast path against the f64 reference, and its entry points against each other.
use crate::common::{apply_bound, configs, dist, norm, positions, random};
use nq_rope::{Rope, reference};

#[test]
fn inv_freqs_match_reference() {
    for cfg in configs() {
        let rope = Rope::new(cfg).unwrap();
        let (want, af) = reference::inv_freqs(&cfg).unwrap();
        assert_eq!(rope.inv_freqs().len(), cfg.rotary_dim / 2);
        for (g, w) in rope.inv_freqs().iter().zip(&want) {
            assert!((g - w).abs() <= 8.0 * f64::EPSILON * w, "{cfg:?}: {g} vs {w}");
        }
        assert!((rope.attention_factor() - af).abs() <= 4.0 * f64::EPSILON * af);
    }
}

#[test]
fn apply_and_invert_match_reference() {
    for (n, cfg) in configs().into_iter().enumerate() {
        let rope = Rope::new(cfg).unwrap();
        let hd = cfg.head_dim;
        let pos = positions(n as u64, 33);
        let x = random(100 + n as u64, pos.len() * hd);
        for inverse in [false, true] {
            let (mut got, mut want) = (x.clone(), x.clone());
            if inverse {
                rope.invert(&mut got, &pos).unwrap();
                reference::invert(&cfg, &mut want, &pos).unwrap();
            } else {
                rope.apply(&mut got, &pos).unwrap();
                reference::apply(&cfg, &mut want, &pos).unwrap();
            }
            let af = rope.attention_factor();
            for (r, ((g, w), xr)) in
                got.chunks(hd).zip(want.chunks(hd)).zip(x.chunks(hd)).enumerate()
            {
                // Inverting divides by the factor: bound relative to the larger of the norms.
                let scale = norm(xr) * af.max(1.0);
                let (e, b) = (dist(g, w), apply_bound(af, scale));
                assert!(e <= b, "{cfg:?} inverse={inverse} row {r} pos {}: {e:e} > {b:e}", pos[r]);
                assert_eq!(g[cfg.rotary_dim..], xr[cfg.rotary_dim..], "tail passes through");
            }
        }
    }
}

/// `apply_row`, `apply_from`, `apply_table` and `apply` run the same arithmetic: same bits.
#[test]
fn entry_points_agree_bit_for_bit() {
    for (n, cfg) in configs().into_iter().enumerate() {
        let rope = Rope::new(cfg).unwrap();
        let hd = cfg.head_dim;
        let start = 999_990u32;
        let pos: Vec<u32> = (start..start + 17).collect();
        let x = random(n as u64, pos.len() * hd);
        for inverse in [false, true] {
            let run = |f: &dyn Fn(&mut [f32])| {
                let mut y = x.clone();
                f(&mut y);
                y
            };
            let explicit =
                run(&|y| if inverse { rope.invert(y, &pos) } else { rope.apply(y, &pos) }.unwrap());
            let from = run(&|y| {
                if inverse { rope.invert_from(y, start) } else { rope.apply_from(y, start) }
                    .unwrap()
            });
            let rows = run(&|y| {
                for (row, &p) in y.chunks_mut(hd).zip(&pos) {
                    if inverse { rope.invert_row(row, p) } else { rope.apply_row(row, p) }.unwrap();
                }
            });
            let table = rope.table(&pos);
            let tabled = run(&|y| {
                if inverse { rope.invert_table(y, &table) } else { rope.apply_table(y, &table) }
                    .unwrap()
            });
            assert!(
                explicit == from && explicit == rows && explicit == tabled,
                "{cfg:?} inverse={inverse}"
            );
            assert_ne!(explicit, x, "the rotation moved something");
        }
    }
}

/// A table of T positions serves a `[heads, T, head_dim]` buffer: row r uses entry r mod T.
#[test]
fn table_cycles_over_heads() {
    let cfg = configs()[7];
    let rope = Rope::new(cfg).unwrap();
    let pos = positions(3, 5);
    let table = rope.table(&pos);
    assert_eq!((table.len(), table.pairs()), (5, cfg.rotary_dim / 2));
    let x = random(4, 3 * pos.len() * cfg.head_dim);
    let mut a = x.clone();
    rope.apply_table(&mut a, &table).unwrap();
    let mut b = x;
    for head in b.chunks_mut(pos.len() * cfg.head_dim) {
        rope.apply(head, &pos).unwrap();
    }
    assert_eq!(a, b);
    let (c, s) = table.entry(1).unwrap();
    let theta = f64::from(pos[1]) * rope.inv_freqs()[0];
    assert_eq!((c[0], s[0]), (theta.cos() as f32, theta.sin() as f32));
    assert!(table.entry(5).is_none());
}

/// The closed-form mean rotation against the position-by-position f64 sum, from one position
/// (where it is `apply`) to ranges that wrap the fast pairs many times, near `u32::MAX` too.
#[test]
fn apply_mean_matches_reference() {
    for (n, cfg) in configs().into_iter().enumerate() {
        let rope = Rope::new(cfg).unwrap();
        let hd = cfg.head_dim;
        let x = random(300 + n as u64, 3 * hd);
        let af = rope.attention_factor();
        for (first, count) in
            [(0, 1), (17, 1), (0, 7), (4_000, 512), (1_000_000, 300), (u32::MAX, 40)]
        {
            let (mut got, mut want) = (x.clone(), x.clone());
            rope.apply_mean(&mut got, first, count).unwrap();
            reference::apply_mean(&cfg, &mut want, first, count).unwrap();
            for (r, ((g, w), xr)) in
                got.chunks(hd).zip(want.chunks(hd)).zip(x.chunks(hd)).enumerate()
            {
                // |C|, |S| <= 1 and rounded once to f32: the bound of one rotation.
                let (e, b) = (dist(g, w), apply_bound(af, norm(xr) * af));
                assert!(e <= b, "{cfg:?} first {first} count {count} row {r}: {e:e} > {b:e}");
                assert_eq!(g[cfg.rotary_dim..], xr[cfg.rotary_dim..], "tail passes through");
            }
        }
        // One position is a plain rotation.
        let (mut mean, mut one) = (x.clone(), x.clone());
        rope.apply_mean(&mut mean, 12_345, 1).unwrap();
        rope.apply(&mut one, &[12_345; 3]).unwrap();
        let b = apply_bound(af, 2.0 * norm(&x) * af);
        assert!(dist(&mean, &one) <= b, "{cfg:?}");
    }
}
