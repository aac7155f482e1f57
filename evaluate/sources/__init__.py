"""The images and their labels: every layout a user may hand us (folders, labels files, parquet, saved and
Hub datasets, WebDataset shards, streaming) read into one list of samples, the subset chosen from it, and the
label numberings mapped to the model's indices. Bytes only: nothing here decodes pixels.
"""
