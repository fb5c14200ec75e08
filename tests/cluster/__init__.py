"""The cluster run: several API nodes and workers in production mode on loopback addresses,
behind haproxy and PgBouncer, a whole campaign through them while processes are killed, and the
project's own truth checks at the end. `make test-cluster` (20,000 registrants and packets, minutes);
test_cluster_small.py runs the same with 1,000 in `make test`."""
