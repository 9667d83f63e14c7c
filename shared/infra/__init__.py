"""The infrastructure every service runs on: Kafka publishing and topic views, HTTP (web,
fast path, server options, writer apps), API keys, settings, errors, the embedded broker
and its gap guard, logging."""
