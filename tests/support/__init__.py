"""Helpers the tests share (importable as ``support``: ``pythonpath = ["tests"]`` in
pyproject.toml).

- ``support.images``: learnable band images, encoded image files, ImageFolder trees
- ``support.idx``: Fashion-MNIST-shaped idx files
- ``support.bombs``: PNGs made by hand (a header only, decompression bombs)
- ``support.server``: the real gunicorn server as a subprocess, free ports, raw HTTP answers
- ``support.service``: the service tests' model, token, reference scores, error contract
- ``support.retrain``: the retraining job's model name, recipes, environment and reports
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
