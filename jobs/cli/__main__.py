"""``python -m jobs.cli``."""

from jobs.cli import app

app()
