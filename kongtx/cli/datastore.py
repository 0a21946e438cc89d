# -*- test-case-name: tests.unit.test_cli -*-
"""``kong migrations`` and ``kong config``: the commands that open the datastore.

They are the only commands with a reactor: each runs its work under ``task.react``
(:func:`_react`) and turns a failure into a :class:`~kongtx.cli.output.CliError`.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from kongtx.cli.output import CliError, CliLog, load_logged
from kongtx.config import Config


def cmd_migrations(args: argparse.Namespace, log: CliLog) -> int:
    """``list`` / ``up`` / ``reset`` against the configured store, under ``task.react``."""
    config = load_logged(log, args.conf)
    if config.database == "off":
        raise CliError("no datastore to migrate: database = off keeps the configuration in memory")
    if args.command == "reset" and not args.yes:
        if not _confirm(log, "Are you sure? This operation is irreversible."):
            log("Canceled")
            return 0

    async def work(reactor: Any) -> None:
        await _run_migrations(reactor, config, args.command, log)

    _react(work, f"migrations {args.command}")
    return 0


def _db_infos(config: Config) -> tuple[str, str]:
    if config.database == "cassandra":
        return "keyspace", config.cassandra_keyspace
    if config.database == "postgres":
        return "database", config.pg_database
    return "database", config.sqlite_path


async def _run_migrations(reactor: Any, config: Config, command: str, log: CliLog) -> None:
    from kongtx.clock import Clock
    from kongtx.plugins.registry import PluginRegistry
    from kongtx.store.factory import migration_identifiers, open_store
    from kongtx.store.migrations import load_migrations

    if config.database == "sqlite":
        os.makedirs(os.path.dirname(config.sqlite_path), exist_ok=True)
    clock = Clock(reactor)
    store = open_store(config, reactor, clock, f"{socket.gethostname()}_kong-cli")
    desc, name = _db_infos(config)
    await store.start()
    try:
        if command == "list":
            executed = await store.executed_migrations()
            if any(executed.values()):
                log(f"Executed migrations for {desc} '{name}':")
                for identifier, names in executed.items():
                    if names:
                        log(f"{identifier}: {', '.join(names)}")
            else:
                log(f"No migrations have been run yet for {desc} '{name}'")
        elif command == "up":
            # The same identifiers the node migrates on start: core, then every plugin.
            registry = PluginRegistry.load(config.custom_plugins)
            identifiers = migration_identifiers(registry)
            ran = await store.migrate(load_migrations(config.database, identifiers))
            for line in ran:
                identifier, _, migration = line.partition(": ")
                log(f"{identifier} migrated up to: {migration}")
            if ran:
                log(f"{len(ran)} migrations ran")
            else:
                log(f"{desc.capitalize()} '{name}' is already up to date")
        elif command == "reset":
            await store.reset()
            log("Schema successfully reset")
    finally:
        await store.stop()
        clock.cancel_all()


def _react(work: Callable[[Any], Any], what: str) -> None:
    """Run ``await work(reactor)`` under ``task.react``; its exception is re-raised here."""
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    outcome: list[BaseException] = []

    def main(reactor: Any) -> Deferred[None]:
        async def run() -> None:
            try:
                await work(reactor)
            except Exception as e:
                outcome.append(e)

        return Deferred.fromCoroutine(run())

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            raise CliError(f"{what} failed") from e
    if outcome:
        raise outcome[0]


def cmd_config(args: argparse.Namespace, log: CliLog) -> int:
    """``parse`` / ``db_import`` / ``db_export``: declarative files (docs/dbless.md).

    ``parse`` validates a file as a DB-less node would (with the plugins the
    configuration loads); ``db_import`` validates all of it, then writes it into
    the configured datastore through the DAO (so running nodes hear of every
    change); ``db_export`` writes the datastore's content as a document, YAML
    unless the file name ends in ``.json``, to stdout without a file.
    """
    from kongtx import declarative

    config = load_logged(log, args.conf)
    if args.command in ("parse", "db_import") and not args.file:
        raise CliError(f"config {args.command} needs a declarative configuration file")
    if args.command != "parse" and config.database == "off":
        raise CliError(
            f"config {args.command} needs a datastore, and database = off keeps the "
            "configuration in memory (set database to sqlite, postgres or cassandra)"
        )
    errors: list[str] = []
    exported: list[str] = []

    async def work(reactor: Any) -> None:
        from kongtx.clock import Clock
        from kongtx.dao import DAO
        from kongtx.plugins.registry import PluginRegistry
        from kongtx.store.factory import migration_identifiers, open_store
        from kongtx.store.memory import MemoryStore
        from kongtx.store.migrations import load_migrations
        from kongtx.store.tables import TABLES

        clock = Clock(reactor)
        registry = PluginRegistry.load(config.custom_plugins)
        origin = f"{socket.gethostname()}_kong-cli"
        try:
            if args.command == "parse":
                document = declarative.read_file(args.file)
                dao = DAO(MemoryStore(TABLES, origin, clock), registry, clock)
                _, result = await declarative.validate_document(document, dao)
                log(f"parse successful: {result.summary()}")
                return
            if config.database == "sqlite":
                os.makedirs(os.path.dirname(config.sqlite_path), exist_ok=True)
            store = open_store(config, reactor, clock, origin)
            await store.start()
            try:
                identifiers = migration_identifiers(registry)
                await store.migrate(load_migrations(config.database, identifiers))
                dao = DAO(store, registry, clock)
                if args.command == "db_import":
                    document = declarative.read_file(args.file)
                    result = await declarative.import_document(document, dao)
                    log(f"import successful: {result.summary()}")
                    return
                exported.append(
                    declarative.dump(
                        await declarative.export_document(dao), declarative.format_for(args.file)
                    )
                )
            finally:
                await store.stop()
        except declarative.DeclarativeError as e:
            errors.extend(e.errors)
        finally:
            clock.cancel_all()

    _react(work, f"config {args.command}")
    if errors:
        for line in errors:
            log.error(line)
        raise CliError(f"config {args.command}: {len(errors)} error(s) in {args.file}")
    for text in exported:
        if args.file:
            with open(args.file, "w", encoding="utf-8") as f:
                f.write(text)
            log(f"export successful: {args.file}")
        else:
            log.out.write(text)
            log.out.flush()
    return 0


def _confirm(log: CliLog, question: str, tries: int = 3) -> bool:
    """Kong's ``[Y/n]`` prompt: up to ``tries`` answers; anything else means no."""
    for _ in range(tries):
        log.out.write(f"> {question} [Y/n] ")
        log.out.flush()
        answer = sys.stdin.readline()
        if not answer:
            return False
        answer = answer.strip()
        if answer in ("Y", "y"):
            return True
        if answer in ("N", "n"):
            return False
    return False
