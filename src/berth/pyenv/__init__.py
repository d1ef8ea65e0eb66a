"""A project's own Python environment: its dependency files, `.env`, and the uv build that serves them."""
