"""Training: data, loops, checkpoints and exact resume, publishing through ``artifacts``, the
CLI (``python -m training``) and the scheduled retraining job. Never imports ``service``."""
