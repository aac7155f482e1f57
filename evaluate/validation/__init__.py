"""Lightning's validate: the Trainer built from the plan, the LightningModule and DataModule of the pass, the
torchmetrics that count it, faults decided together across ranks, and the batch size that fits.
"""
