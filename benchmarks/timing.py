"""Shared timing helper of the micro-benchmarks."""

import time


def best_ms(fn, reps: int = 5, warmup: int = 2) -> float:
    """The fastest of `reps` calls of fn, in ms, after `warmup` untimed calls: the least
    disturbed run on a shared machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3
