"""The one way the benchmarks print a series of timings."""

import statistics


def figures(samples):
    """``n=.. p50=.. ms p95=.. ms max=.. ms`` of samples in milliseconds."""
    samples = sorted(samples)
    return (
        f"n={len(samples)} p50={statistics.median(samples):.1f} ms "
        f"p95={samples[int(0.95 * (len(samples) - 1))]:.1f} ms max={samples[-1]:.1f} ms"
    )
