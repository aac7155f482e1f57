"""Bundled default assets: real scikit-learn digits validation images and a tiny original-format CvT trained on them."""
