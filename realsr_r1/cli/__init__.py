"""The `realsr` command line: one module per command group, all on one Typer app."""

from realsr_r1.cli import annotate_template, evaluate, policy, releases, rewards, scale, synthesis  # noqa: F401  (registers their commands)
from realsr_r1.cli.app import app

__all__ = ["app"]
