"""Benchmarks of cvt-port: ``python -m benchmarks`` runs them all, ``python -m benchmarks.<name>`` one.

One small module per benchmark (``harness_overhead``, ``cache_vs_jpeg``, ``conversion``, ``options``,
``scaling``, ``multi_model``; ``gpu``, the prepared GPU check with its runs in ``gpu_runs``, runs only when
named), shared helpers for timing (``timing``: the measured process runner, the bare model loop, medians,
ratios, targets) and reporting (``report``: the table, results.json), the run's plan and workspace
(``workspace``), the driver (``suite``) and its command line (``cli``, the only module that parses flags), and
the processes they time, each a real module: ``bare_loop``, ``baseline_convert``, ``import_floor`` and the
measuring middleman ``measure``. Random checkpoints and photos come from ``benchmarks.synthetic``, a
package the tests use too. See :mod:`benchmarks.suite`.

This file stays free of imports: ``python -S -m benchmarks.measure`` runs without site-packages.
"""
