"""FastAPI gateway over a vLLM engine process, with a versioned adapter registry."""
