"""The contract other teams and producers depend on (ARCHITECTURE): event models, their
CloudEvents codec, the topics, and text people typed."""
