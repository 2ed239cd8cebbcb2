"""Foundation tier: what every other part of cassle builds on and that knows nothing of SSL.

Errors, atomic file I/O, provenance, distributed helpers, devices, optimisers and schedules, and the `Registry` that
owns each list of names. Nothing here imports from the rest of cassle (docs/architecture.md).
"""
