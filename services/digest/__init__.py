"""Digest service (:8004): a weekly e-mail per manager about their team, sent once."""
