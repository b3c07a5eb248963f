"""absl entry points behind `genie-jax COMMAND`."""
