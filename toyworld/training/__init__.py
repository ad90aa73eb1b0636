"""Training scripts of the toy world (run with ``python -m toyworld.train STAGE``)."""
