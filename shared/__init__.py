"""Rapport's shared package: event models, CloudEvents codec, Kafka helpers, settings, auth."""
