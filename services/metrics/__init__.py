"""Metrics service (:8003): appreciation and trust figures for Prometheus."""
