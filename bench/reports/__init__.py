"""Figures and reports built from result files (never by rerunning an attack)."""
