"""The `accelflow` command line."""
