"""Images to tensors: the release's and the image processor's preprocessing, the dataset that decodes on the
fly, and the pixel cache that decodes once (built by one process or by every task of a launch).
"""
