"""Aggregator: faust-streaming workers turning recognitions into team snapshots."""
