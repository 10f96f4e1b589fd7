"""Kept only for test_schedule_settings.py and test_schedule_timing.py, which import from here:
when they move to tests/training/retrain/, their imports read ``from support.retrain import
...`` (``from support import REPO``) and this file goes."""

from support import REPO
from support.retrain import BAD, GOOD, NAME, production, reports

__all__ = ["BAD", "GOOD", "NAME", "REPO", "production", "reports"]
