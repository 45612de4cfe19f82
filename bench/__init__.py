"""Reproducible benchmarks of signal-bridge against a minimal baseline, measured in the same run.

``python -m bench latency|throughput|telemetry|mqtt|footprint|scale|all [--quick]``; see bench/README.md.
They print figures; they are not tests (tests/test_bench_smoke.py only checks that they still run).
"""
