"""asv benchmark suite (bench_*.py, common.py) and stand-alone benchmark scripts; see README."""
