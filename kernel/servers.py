"""Finding or starting the servers a command needs, and migrating the database.

With DATABASE_URL and REDIS_URL set nothing is embedded. Otherwise the embedded servers are
started under the state directory, or reused when another `stimulus` process already runs them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from kernel import db
from kernel.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, port_free, socket_dir_for
from kernel.settings import Settings


@dataclass
class RunningStack:
    settings: Settings  # with database_url and redis_url filled in
    owned: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)

    def stop(self) -> None:
        for server in reversed(self.owned):
            server.stop()
        self.owned.clear()


def _redis_alive(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_stack(settings: Settings, need_redis: bool = True) -> RunningStack:
    """Servers for `settings`: configured ones, or embedded ones (started or reused)."""
    stack = RunningStack(settings)
    database_url, redis_url = settings.database_url, settings.redis_url
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    if database_url is None:
        pg_dir = state / "postgres"
        pg = EmbeddedPostgres(pg_dir, socket_dir_for(pg_dir))
        already = pg.is_running()
        pg.start()
        if not already:
            stack.owned.append(pg)
        database_url = pg.url
    if redis_url is None and need_redis:
        port_file = state / "redis.port"
        port = int(port_file.read_text()) if port_file.exists() else 0
        if not port or not _redis_alive(port):
            port = port if port and port_free(port) else free_port()
            server = EmbeddedRedis(state / "redis", port)
            server.start()
            port_file.write_text(str(port))
            stack.owned.append(server)
        redis_url = f"redis://127.0.0.1:{port}/0"
    stack.settings = replace(settings, database_url=database_url, redis_url=redis_url)
    return stack


async def run_migrations(database_url: str, pooler: str = "none") -> list[str]:
    conn = await db.connect(database_url, pooler=pooler)
    try:
        return await db.migrate(conn)
    finally:
        await conn.close()


def migrate_sync(settings: Settings) -> list[str]:
    """Migrate over the direct address when one is given, else through whatever DATABASE_URL names."""
    url = settings.migration_database_url
    assert url
    return asyncio.run(run_migrations(url, "none" if settings.database_direct_url else settings.db_pooler))
