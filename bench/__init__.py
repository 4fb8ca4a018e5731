"""Benchmarks of the gateway against nginx proxy_cache and the bare (fake) upstream.

Not part of the test suite: run `python -m bench` (or bench/run.sh); see bench/README.md.
"""
