"""Benchmarks of cvt-port: ``python -m benchmarks`` runs them all, ``python -m benchmarks.<name>`` one.

One small module per benchmark (``harness_overhead``, ``cache_vs_jpeg``, ``conversion``, ``options``,
``scaling``; ``gpu``, the prepared GPU check, runs only when named), shared helpers for timing (``timing``: the
measured process runner, medians, ratios, targets) and reporting (``report``: the table, results.json), the run's
plan and workspace (``workspace``), the driver (``suite``), and the processes they time, each a real module:
``bare_loop``, ``baseline_convert``, ``import_floor`` and the measuring middleman ``measure``. See
:mod:`benchmarks.suite`.

This file stays free of imports: ``python -S -m benchmarks.measure`` runs without site-packages.
"""
