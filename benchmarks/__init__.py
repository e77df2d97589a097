"""Reproducible speed, memory and accuracy measurements of hftl against the plain Hugging Face way.

`python benchmarks/run.py --suite quick` runs every case twice with hftl and twice with an equivalent
`transformers.Trainer` set-up, alternating, and writes a markdown table and JSON (see docs/benchmarks.md).
"""
