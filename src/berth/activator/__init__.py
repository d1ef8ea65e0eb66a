"""berth's activator: in a cluster, holds the requests of an API scaled to zero while it scales it to one.

Rendered by berth.backends.kubernetes.render_activator as one shared Deployment per namespace; the HTTPRoute
of every API with `min_replicas: 0` sends its traffic through it (`python -m berth.activator`).
"""
