"""The scheduled retraining job: the loop, one run, the comparison with production, its
settings and its lock."""
