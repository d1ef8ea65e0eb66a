"""The `berth` command: parse, call the client, print."""
