"""The ground floor of stimulus: what every domain package builds on, knowing none of them.

Settings, the database pool and its migrations, Redis clients, the ledger and the audit log,
signing, errors and problem details, operator tokens and roles, citizens' identity tokens, rate
limits and idempotency, maker-checker approvals and durable jobs, leases, content-addressed
artefacts, the embedded servers and the helpers every command-line module shares.

Imports point down: `stimulus` (the assembly: the app, the CLI, the supervisor, the demo) imports
the domain packages (lottery, wallet_adapter, merchants, and the sandbox beside them), which
import this package; this package imports none of them (tests/foundation/test_layers.py).
"""
