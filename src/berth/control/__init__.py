"""The control plane daemon: store, supervisor, reconciler, management API."""
