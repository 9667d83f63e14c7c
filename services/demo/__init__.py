"""Demo data: a small organisation and six weeks of kudos, posted through the public API."""
