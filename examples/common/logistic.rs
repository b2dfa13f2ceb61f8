//! The binary classifiers' output and loss, shared by the training
//! examples (a module of each, by `#[path]`).

/// The logistic function: a logit to a probability.
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Binary cross-entropy of probability `p` against label `y`, `p` kept
/// off 0 and 1 so a confident miss costs a large loss, not infinity.
pub fn bce(p: f32, y: f32) -> f32 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}
