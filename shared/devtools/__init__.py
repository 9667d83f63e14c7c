"""Development tooling, kept out of the image (pyproject excludes this package): Apache
Kafka run from its Maven jars, for the tests and `rapport kafka`."""
