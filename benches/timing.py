"""The timing loop both reference scripts share with `cargo bench --bench throughput`: one warm-up
call, then calls until `BENCH_SECONDS` have passed (at least 3)."""

import os
import time

seconds = float(os.environ.get("BENCH_SECONDS", 10))


def rate(work):
    """Calls of `work` per second."""
    work()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < seconds or calls < 3:
        work()
        calls += 1
    return calls / (time.perf_counter() - start)
