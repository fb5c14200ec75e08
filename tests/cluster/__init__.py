"""The cluster run: several API nodes and workers on loopback addresses, behind haproxy and
PgBouncer, a whole campaign through them while processes are killed, and the project's own
truth checks at the end. Long, so not part of `make test`: `make test-cluster`, or
`python -m tests.cluster --registrants 2000` for a smoke run."""
