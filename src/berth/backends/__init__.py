"""What the CLI talks to (the `Backend` interface) and the environments that name one backend each."""
