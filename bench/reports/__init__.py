"""Figures and reports built from result files (never by rerunning an attack).

The ranking options the command line registers live here, so that building the parser does not
import pandas (``bench.reports.leaderboard`` re-exports them).
"""

DIVERGED_MODES = ("exclude", "include")
DEFAULT_TOLERANCE = 2.0  # accuracy points
DEFAULT_SUCCESS = "psnr_gain>=6"  # bench.reports.stats.DEFAULT_SUCCESS, kept here for the parser
