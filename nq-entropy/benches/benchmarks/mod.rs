//! Bench modules and their shared settings.
pub(crate) mod archive;
pub(crate) mod coords;
pub(crate) mod planes;
pub(crate) mod rans;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};

/// Quick settings: the whole crate's benches finish in about a minute.
pub(crate) fn quick() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// One benchmark in its own group, with throughput in logical bytes per iteration.
pub(crate) fn bench<R>(
    c: &mut Criterion,
    group: &str,
    id: &BenchmarkId,
    bytes: u64,
    mut f: impl FnMut() -> R,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(id.clone(), |b| b.iter(&mut f));
    g.finish();
}
