"""Benchmarks of cvt-port: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

One run measures every performance target side by side (harness overhead, the preprocessed
cache, conversion of a full-size CvT-W24 file, precision and speed options, scaling), prints one
table and writes ``benchmarks/results.json``. See :mod:`benchmarks.run`.
"""
