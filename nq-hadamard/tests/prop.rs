//! Properties: involution, norm and dot-product preservation, randomized round trip.
use crate::common::{dist, isas, norm, tol};
use nq_hadamard::{RandomizedHadamard, fwht_rows_with};
use proptest::prelude::*;

/// A row of power-of-two length 1..=1024 with values spanning several magnitudes.
fn row() -> impl Strategy<Value = Vec<f32>> {
    (0u32..=10).prop_flat_map(|k| {
        prop::collection::vec(prop_oneof![-1e3f32..1e3, -1e-3f32..1e-3], 1usize << k)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn fwht_is_involution_and_preserves_norm(x in row()) {
        let dim = x.len();
        for isa in isas() {
            let mut y = x.clone();
            fwht_rows_with(isa, &mut y, dim)?;
            // ‖Hx‖ = ‖x‖ up to one pass of rounding.
            prop_assert!((norm(&y) - norm(&x)).abs() <= tol(dim, 1, norm(&x)));
            fwht_rows_with(isa, &mut y, dim)?; // orthonormal and symmetric => self-inverse
            let (e, t) = (dist(&x, &y), tol(dim, 2, norm(&x)));
            prop_assert!(e <= t, "{}: err {e:e} > {t:e}", isa.name());
        }
    }

    #[test]
    fn randomized_inverse_undoes_forward(x in row(), seed in any::<u64>()) {
        let dim = x.len();
        for isa in isas() {
            let rh = RandomizedHadamard::new(dim, seed)?.with_isa(isa)?;
            let mut y = x.clone();
            rh.forward(&mut y)?;
            prop_assert!((norm(&y) - norm(&x)).abs() <= tol(dim, 1, norm(&x)));
            rh.inverse(&mut y)?;
            let (e, t) = (dist(&x, &y), tol(dim, 2, norm(&x)));
            prop_assert!(e <= t, "{}: err {e:e} > {t:e}", isa.name());
        }
    }

    #[test]
    fn randomized_preserves_dot_products(
        (q, k) in (0u32..=9).prop_flat_map(|e| {
            let v = prop::collection::vec(-10f32..10.0, 1usize << e);
            (v.clone(), v)
        }),
        seed in any::<u64>(),
    ) {
        let dim = q.len();
        let rh = RandomizedHadamard::new(dim, seed)?;
        let (mut hq, mut hk) = (q.clone(), k.clone());
        rh.forward(&mut hq)?;
        rh.forward(&mut hk)?;
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum::<f64>();
        // |q.k - Hq.Hk| <= ‖q‖ ‖Hk - k'‖ + ‖Hq - q'‖ ‖k‖ with each transform error bounded by
        // tol(dim, 1, ·) (dots accumulated in f64).
        let bound = 2.0 * tol(dim, 1, norm(&q) * norm(&k));
        prop_assert!((dot(&hq, &hk) - dot(&q, &k)).abs() <= bound);
    }
}
