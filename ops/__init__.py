"""Operator commands run from the deploying machine against a deployed stack, on any backend:
`make verify` (ops.verify), `make check` (ops.check), `make outputs` (ops.outputs). They read the
stack through one door (ops.stack) and the backends through the registry."""
