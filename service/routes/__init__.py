"""HTTP routes, one module per area; handlers stay thin and call the Gateway."""
