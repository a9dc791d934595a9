//! Small dense linear algebra for the statistics the releases post-process: a Cholesky
//! factorisation and the solve it gives (regression's normal equations, Newton's steps).

/// The lower-triangular `L` with `LLᵀ = a`, or `None` if `a` is not (numerically) positive
/// definite.
// Index loops read as the textbook formulas.
#[allow(clippy::needless_range_loop)]
pub(crate) fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                // Near-zero pivots count as failure: the matrix is numerically singular.
                if d <= 1e-12 * a[i][i].abs() || !d.is_finite() {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

/// The `x` with `LLᵀx = b`.
// Index loops read as the textbook formulas.
#[allow(clippy::needless_range_loop)]
pub(crate) fn cholesky_solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = l.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    x
}
