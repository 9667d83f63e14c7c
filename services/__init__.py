"""Rapport's deployable services, one package each."""
