"""`python -m realsr_r1.cli` runs the `realsr` command."""

from realsr_r1.cli import app

app()
