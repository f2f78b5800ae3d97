"""Offline stand-in for @remote_coverage_tools (nothing to load; kept for symmetry)."""
