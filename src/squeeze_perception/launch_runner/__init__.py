"""launch_runner package."""
