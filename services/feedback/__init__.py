"""Feedback service (:8002): survey responses, pseudonymized, and leaders' self-assessments."""
