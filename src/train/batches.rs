//! Which faces each batch holds.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Batches in a seeded shuffled order, a fresh order each epoch; a batch that runs
/// past the end of an epoch continues into the next (as Caffe's data layers do).
/// Batch k is a pure function of (seed, k), so a resumed run sees the same batches.
pub struct Batches {
    n: usize,
    seed: u64,
    /// false: every epoch in file order (Caffe's data layers without `shuffle`).
    shuffle: bool,
    epoch: Option<(usize, Vec<i64>)>,
}

impl Batches {
    pub fn new(n: usize, seed: u64, shuffle: bool) -> Batches {
        Batches { n, seed, shuffle, epoch: None }
    }

    fn order(&mut self, epoch: usize) -> &[i64] {
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<i64> = (0..self.n as i64).collect();
            if self.shuffle {
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                    self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ));
            }
            self.epoch = Some((epoch, order));
        }
        &self.epoch.as_ref().expect("just set").1
    }

    /// The `size` indices of global batch number `k`.
    pub fn batch(&mut self, k: usize, size: usize) -> Vec<i64> {
        (k * size..(k + 1) * size)
            .map(|pos| {
                let n = self.n;
                self.order(pos / n)[pos % n]
            })
            .collect()
    }
}
