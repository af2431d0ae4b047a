"""``python -m jobs.cli``."""

from jobs.cli import app

if __name__ == "__main__":
    app()
