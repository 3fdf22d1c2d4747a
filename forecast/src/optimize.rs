//! A compact, deterministic box-bounded minimiser: score a fixed grid, then
//! refine the best few grid points with Nelder-Mead, clamping every vertex
//! into the box.
//!
//! Why not a crate: the objective (one-step SSE of Holt-Winters) is cheap,
//! smooth enough and has at most five parameters; an optimisation crate
//! would bring linear algebra we do not need. Determinism matters more than
//! speed: same history, same parameters, so forecasts are reproducible.

/// Where the search stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Minimum {
    pub x: Vec<f64>,
    pub f: f64,
}

/// Minimises `f` over the box `lo..=hi`. `grid[i]` lists the starting values
/// tried for coordinate `i` (their Cartesian product is scored); the best
/// `refine` grid points are refined with up to `max_evals` evaluations each.
/// Non-finite objective values count as +∞.
pub(crate) fn minimize(
    f: &mut dyn FnMut(&[f64]) -> f64,
    lo: &[f64],
    hi: &[f64],
    grid: &[Vec<f64>],
    refine: usize,
    max_evals: usize,
) -> Minimum {
    let d = lo.len();
    let mut eval = |x: &[f64]| {
        let v = f(x);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    // Cartesian product of the grid, in a fixed order.
    let mut starts: Vec<Minimum> = Vec::new();
    let mut idx = vec![0usize; d];
    loop {
        let x: Vec<f64> = (0..d)
            .map(|i| {
                grid[i]
                    .get(idx[i])
                    .copied()
                    .unwrap_or(lo[i])
                    .clamp(lo[i], hi[i])
            })
            .collect();
        let fx = eval(&x);
        starts.push(Minimum { x, f: fx });
        let mut i = 0;
        while i < d {
            idx[i] += 1;
            if idx[i] < grid[i].len().max(1) {
                break;
            }
            idx[i] = 0;
            i += 1;
        }
        if i == d {
            break;
        }
    }
    // Stable sort: ties keep grid order, so the result is deterministic.
    starts.sort_by(|a, b| a.f.total_cmp(&b.f));
    let mut best = starts[0].clone();
    for s in starts.iter().take(refine) {
        let m = nelder_mead(&mut eval, s, lo, hi, max_evals);
        if m.f < best.f {
            best = m;
        }
    }
    best
}

fn nelder_mead(
    f: &mut dyn FnMut(&[f64]) -> f64,
    start: &Minimum,
    lo: &[f64],
    hi: &[f64],
    max_evals: usize,
) -> Minimum {
    let d = lo.len();
    let clamp = |x: &mut Vec<f64>| {
        for i in 0..d {
            x[i] = x[i].clamp(lo[i], hi[i]);
        }
    };
    let mut simplex = vec![start.clone()];
    let mut evals = 0;
    for i in 0..d {
        let mut x = start.x.clone();
        let step = 0.1 * (hi[i] - lo[i]);
        // Step inwards when the start sits on the upper bound.
        x[i] = if x[i] + step <= hi[i] {
            x[i] + step
        } else {
            x[i] - step
        };
        let fx = f(&x);
        evals += 1;
        simplex.push(Minimum { x, f: fx });
    }
    while evals < max_evals {
        simplex.sort_by(|a, b| a.f.total_cmp(&b.f));
        let (fb, fw) = (simplex[0].f, simplex[d].f);
        if (fw - fb).abs() <= 1e-10 * (fb.abs() + 1e-12) {
            break;
        }
        let centroid: Vec<f64> = (0..d)
            .map(|i| simplex[..d].iter().map(|v| v.x[i]).sum::<f64>() / d as f64)
            .collect();
        let along = |t: f64| {
            let mut x: Vec<f64> = (0..d)
                .map(|i| centroid[i] + t * (simplex[d].x[i] - centroid[i]))
                .collect();
            clamp(&mut x);
            x
        };
        let xr = along(-1.0);
        let fr = f(&xr);
        evals += 1;
        if fr < simplex[0].f {
            let xe = along(-2.0);
            let fe = f(&xe);
            evals += 1;
            simplex[d] = if fe < fr {
                Minimum { x: xe, f: fe }
            } else {
                Minimum { x: xr, f: fr }
            };
        } else if fr < simplex[d - 1].f {
            simplex[d] = Minimum { x: xr, f: fr };
        } else {
            let t = if fr < simplex[d].f { -0.5 } else { 0.5 };
            let xc = along(t);
            let fc = f(&xc);
            evals += 1;
            if fc < simplex[d].f.min(fr) {
                simplex[d] = Minimum { x: xc, f: fc };
            } else {
                // Shrink towards the best vertex.
                let best = simplex[0].x.clone();
                for v in simplex.iter_mut().skip(1) {
                    for (x, b) in v.x.iter_mut().zip(&best) {
                        *x = b + 0.5 * (*x - b);
                    }
                    v.f = f(&v.x);
                    evals += 1;
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.f.total_cmp(&b.f));
    simplex.swap_remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_interior_and_boundary_minima() {
        let mut bowl = |x: &[f64]| (x[0] - 0.3).powi(2) + 10.0 * (x[1] - 0.7).powi(2);
        let m = minimize(
            &mut bowl,
            &[0.0, 0.0],
            &[1.0, 1.0],
            &[vec![0.1, 0.9], vec![0.5]],
            2,
            400,
        );
        assert!(
            (m.x[0] - 0.3).abs() < 1e-3 && (m.x[1] - 0.7).abs() < 1e-3,
            "{m:?}"
        );
        // Unconstrained minimum at (2, −1): the box pins it to a corner.
        let mut out = |x: &[f64]| (x[0] - 2.0).powi(2) + (x[1] + 1.0).powi(2);
        let m = minimize(
            &mut out,
            &[0.0, 0.0],
            &[1.0, 1.0],
            &[vec![0.5], vec![0.5]],
            1,
            400,
        );
        assert!((m.x[0] - 1.0).abs() < 1e-3 && m.x[1].abs() < 1e-3, "{m:?}");
    }

    #[test]
    fn nan_is_worse_than_anything_and_flat_stops() {
        let mut f = |x: &[f64]| if x[0] > 0.5 { f64::NAN } else { x[0] };
        let m = minimize(&mut f, &[0.0], &[1.0], &[vec![0.9, 0.4]], 2, 200);
        assert!(m.x[0] < 1e-3, "{m:?}");
        let mut calls = 0;
        let mut flat = |_: &[f64]| {
            calls += 1;
            0.0
        };
        let m = minimize(&mut flat, &[0.0], &[1.0], &[vec![0.5]], 1, 1000);
        assert_eq!(m.f, 0.0);
        assert!(calls < 10, "a flat objective stops at once ({calls} calls)");
    }
}
