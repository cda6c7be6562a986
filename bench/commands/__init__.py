"""Sub-commands of ``python -m bench``; each module has ``register(subparsers)`` and a handler."""
