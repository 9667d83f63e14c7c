"""Read models: the directory, team snapshots and the survey catalogue, as the services
read them."""
