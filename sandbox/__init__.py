"""The outside parties stimulus talks to, simulated for development: operator banks, the identity
provider (OpenID Connect discovery + JWKS) and a drand relay.

Each speaks the same HTTP protocol as the real party, so the product takes the same path in a demo
as in production. Nothing in the product's packages imports this one, and a production start
neither mounts nor trusts anything from it.
"""
