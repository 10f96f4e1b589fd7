"""The model report published with every version: what the test split says about a model
beyond one accuracy figure.

- :mod:`training.report.metrics`: ``report.json`` from the test split's probabilities
  (per-class precision/recall/F1, confusion matrix, calibration, most confident mistakes,
  predicted-class shares) and the table people read in a terminal. Needs torch only.
- :mod:`training.report.pictures`: ``confusion.png``, ``reliability.png`` and ``mistakes.png``
  from that report. Needs matplotlib (the ``training`` extra), so it is imported only to draw.
"""
