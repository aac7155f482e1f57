"""From measured figures to a verdict: the gate's checks and settings, the statistics that size them (power,
intervals, McNemar) and the comparison with an earlier run (baseline).
"""
