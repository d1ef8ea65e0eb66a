"""Pure decisions: no sockets, processes, clocks or frameworks. Time and state come in as arguments."""
