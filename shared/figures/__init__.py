"""Figures for a window, computed at read time from snapshots: appreciation, connections
(and gaming signals), trust."""
