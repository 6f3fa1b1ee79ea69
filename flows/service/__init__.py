"""The service: the Prefect server, workers, deployments and the task list."""
