"""evaluate: accuracy harness for converted CvT models."""
