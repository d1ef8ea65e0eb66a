"""The Kubernetes backend: the same berth.yaml, rendered into Kubernetes objects and server-side-applied.

* `render` (pure): a spec file -> the objects of each API (Deployment, Service, ScaledObject or HPA, PDB,
  HTTPRoute, the code ConfigMap); `to_yaml` is what `berth export` prints.
* `status` (pure): kubectl's rollout-status rules and pod failures in berth's status words.
* `cluster`: the few calls berth makes to an API server (apply, prune, list, logs, delete, restart).
* `backend`: `KubernetesBackend`, the `Backend` the CLI talks to for a kubernetes environment.

Imported lazily by the CLI: nothing here is loaded for the local backend.
"""
