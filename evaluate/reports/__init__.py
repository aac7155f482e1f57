"""What a run leaves behind: report.json, report.md, predictions.csv and per_class.csv, and, after a passed
gate only, the model card's results and the upload.
"""
