"""The process environment every step runs in: the launcher's allocation (SLURM, torchrun), signals and
interruptions, the peers of a launch, numerics policy and progress. The lowest layer above the plan: it knows
nothing of images, models or verdicts.
"""
