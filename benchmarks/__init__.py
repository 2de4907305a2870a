"""Side-by-side performance runs; results and how to rerun them are in benchmarks/README.md."""
