"""One-off measurements behind docs/performance.md and docs/scaling.md.

Run from a checkout (`python -m benchmarks.experiments.NAME`); not installed
with chat-relay: chat-bench and the suite are the tool, these are the lab.
"""
