"""One module per CLI verb: `register(subparsers)` adds its parser and sets `handler`."""
