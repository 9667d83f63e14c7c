"""What Rapport's services share, by role: ``contract`` (what other teams depend on:
events, their CloudEvents form, topics, text people typed), ``infra`` (Kafka, topic
views, HTTP, auth, settings, errors, the embedded broker), ``readmodels`` (the directory,
snapshots and survey questions as services read them), ``figures`` (appreciation,
connection and trust figures for a window, computed at read time) and ``devtools``
(development only: not in the image)."""
