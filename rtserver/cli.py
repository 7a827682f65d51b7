"""``rtserver``: serve, mint development tokens, publish events, run the demo, relay the outbox,
deliver webhooks, push to phones."""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys

import trio

from rtserver.backends.auth import mint_token
from rtserver.backends.config import Config, ConfigError, load_config
from rtserver.backends.tracing import Tracing


def _config(args: argparse.Namespace) -> Config:
    overrides: dict = {"server": {}, "bus": {}}
    if getattr(args, "host", None):
        overrides["server"]["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["server"]["port"] = args.port
    if getattr(args, "redis_url", None):
        overrides["bus"]["redis_url"] = args.redis_url
    if getattr(args, "workers", None) is not None:
        overrides["server"]["workers"] = args.workers
    if getattr(args, "postgres_dsn", None):
        overrides["outbox"] = {"postgres_dsn": args.postgres_dsn}
    return load_config(args.config, overrides=overrides)


async def _serve(config: Config, worker: int | None = None) -> None:
    """One node until SIGTERM or SIGINT, then its drain; ``worker``: its index among the
    workers of ``serve --workers`` (it then serves its metrics on a port of its own)."""
    from rtserver.backends.boundary import contained
    from rtserver.node import Node

    node = Node(config)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node.run)
            host = config.server.host
            if worker is not None:
                _serve_worker_metrics(config, worker, node.metrics.registry)
            tls = "s" if config.server.tls else ""
            print(f"rtserver listening on http{tls}://{host}:{port}  (WebSocket ws{tls}://{host}:{port}/hub/ws)",
                  file=sys.stderr, flush=True)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    node.reload()
                    continue
                with contained(node.metrics, "drain"):  # whatever fails, the process still exits
                    await node.drain()
                nursery.cancel_scope.cancel()
                break
    node.tracing.shutdown()  # the spans still buffered


def _serve_worker_metrics(config: Config, worker: int, registry) -> None:
    """Worker ``worker``'s ``/metrics`` on ``server.worker_metrics_port + worker`` (0: a free
    port), said in its ``worker_started`` log line."""
    import os

    import structlog
    from prometheus_client import start_http_server

    base = config.server.worker_metrics_port
    server, _ = start_http_server(base + worker if base else 0, addr=config.server.host, registry=registry)
    structlog.get_logger("rtserver.workers").info("worker_started", worker=worker, pid=os.getpid(),
                                                  metrics_port=server.server_port)


def cmd_serve(args: argparse.Namespace) -> None:
    from rtserver.backends.logs import configure_logging

    config = _config(args)
    configure_logging(config.log.level)
    if args.worker_index is None and config.server.workers > 1:
        from rtserver.workers import Supervisor

        def command(port: int, i: int) -> list[str]:
            return [sys.executable, "-m", "rtserver", "serve", *(["--config", args.config] if args.config else []),
                    "--host", config.server.host, "--port", str(port), "--redis-url", config.bus.redis_url,
                    "--workers", str(config.server.workers), "--worker-index", str(i)]

        raise SystemExit(trio.run(Supervisor(config, command).run))
    trio.run(_serve, config, args.worker_index)


def _base_url(args: argparse.Namespace, config: Config, port: int | None = None) -> str:
    scheme = "https" if config.server.tls else "http"
    return getattr(args, "url", None) or f"{scheme}://{config.server.host}:{port or config.server.port}"


def _dev_secret(config: Config, command: str) -> str:
    if not config.auth.hs256_secret:
        raise SystemExit(f"rtserver {command}: the configuration has no auth.hs256_secret")
    return config.auth.hs256_secret


def _print_pages(base: str, secret: str) -> None:
    from rtserver.demo import page_urls

    for name, url in page_urls(base, secret).items():
        print(f"  {name + ':':9}{url}", file=sys.stderr, flush=True)


def cmd_pages(args: argparse.Namespace) -> None:
    config = _config(args)
    _print_pages(_base_url(args, config), _dev_secret(config, "pages"))


def cmd_demo(args: argparse.Namespace) -> None:
    """Feed a running server (``--url``), or start an embedded node and feed it."""
    from rtserver.demo import feed
    from rtserver.backends.logs import configure_logging

    config = _config(args)
    secret = _dev_secret(config, "demo")
    configure_logging("warning")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            if args.url:
                base = args.url
            else:
                from rtserver.node import Node

                node = Node(config)
                base = _base_url(args, config, await nursery.start(node.run))
            print(f"rtserver demo on {base}: open the pages", file=sys.stderr, flush=True)
            _print_pages(base, secret)
            await feed(base, secret)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


def cmd_relay(args: argparse.Namespace) -> None:
    """``relay``: move outbox rows to the streams until SIGTERM/SIGINT; ``relay migrate``:
    create or update the outbox schema."""
    import trio_asyncio

    from rtserver.backends.logs import configure_logging
    from rtserver.outbox import OutboxSchemaError, migrate
    from rtserver.outbox.relay import Relay

    config = _config(args)
    configure_logging(config.log.level)
    if not config.outbox.postgres_dsn:
        raise SystemExit("rtserver relay: set outbox.postgres_dsn (or --postgres-dsn)")

    async def run() -> str | None:
        """None, or why the relay cannot run."""
        async with trio_asyncio.open_loop():
            if args.action == "migrate":
                try:
                    await migrate(config.outbox.postgres_dsn, config.bus.shards)
                except OutboxSchemaError as exc:
                    return str(exc)
                print(f"outbox schema ready ({config.bus.shards} shards)", file=sys.stderr)
                return None
            try:
                relay = Relay(config)
            except ValueError as exc:
                return str(exc)
            refused: list[str] = []
            try:
                await _run_until_signalled(relay.run, relay.metrics.registry, config, args.metrics_port)
            except* OutboxSchemaError as group:
                refused = [str(error) for error in _leaves(group)]
            finally:
                relay.tracing.shutdown()  # the spans still buffered
        return "; ".join(refused) or None

    error = trio.run(run)
    if error:
        raise SystemExit(f"rtserver relay: {error}")


def cmd_webhooks(args: argparse.Namespace) -> None:
    """``webhooks``: deliver until SIGTERM/SIGINT; ``webhooks replay``: one more attempt for
    each dead letter."""
    from rtserver.webhooks import Dispatcher, replay

    config, bus = _on_redis(args, "webhooks")
    if not config.webhooks.subscriptions:
        raise SystemExit("rtserver webhooks: no [[webhooks.subscriptions]] configured")

    async def run() -> None:
        async with bus.commands():
            if args.action == "replay":
                delivered, failed = await replay(config.webhooks, bus, args.subscription)
                print(f"replayed: {delivered} delivered, {failed} still dead", file=sys.stderr)
                return
            dispatcher = Dispatcher(config.webhooks, bus)
            await _run_until_signalled(dispatcher.run, dispatcher.metrics.registry, config, args.metrics_port)

    trio.run(run)


def cmd_push(args: argparse.Namespace) -> None:
    """``push``: push to the phones of users with no live connection until SIGTERM/SIGINT."""
    from rtserver.push import Dispatcher

    config, bus = _on_redis(args, "push")
    try:
        dispatcher = Dispatcher.on_redis(config.push, bus)
    except ValueError as exc:
        raise SystemExit(f"rtserver push: {exc}") from None

    async def run() -> None:
        async with bus.commands():
            await _run_until_signalled(dispatcher.run, dispatcher.metrics.registry, config, args.metrics_port)

    trio.run(run)


def _on_redis(args: argparse.Namespace, command: str):
    """The configuration (logging set up) and the Redis bus of a process beside the nodes."""
    from rtserver.backends.bus.redis import RedisBus
    from rtserver.backends.logs import configure_logging

    config = _config(args)
    configure_logging(config.log.level)
    if not config.bus.redis_url:
        raise SystemExit(f"rtserver {command}: set bus.redis_url (or --redis-url)")
    return config, RedisBus.for_config(config)


async def _run_until_signalled(service, registry, config: Config, metrics_port: int) -> None:
    """Run ``service`` (a ``nursery.start`` task) until SIGTERM or SIGINT; its metrics on
    ``metrics_port`` (0: not served)."""
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=config.server.host, registry=registry)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(service)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions of a (nested) group."""
    return [leaf for error in group.exceptions
            for leaf in (_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])]


def _claims(args: argparse.Namespace) -> dict:
    claims: dict = {"sub": args.sub, "roles": args.roles.split(",")}
    if args.tenant:
        claims["healthUnitTaxId"] = args.tenant
    for flag, claim in (("professional", "professionalTaxId"), ("patient", "patientTaxId")):
        if getattr(args, flag):
            claims[claim] = getattr(args, flag)
    for flag, claim in (("specialities", "specialityIds"), ("threads", "threadIds"),
                        ("presence_groups", "presenceGroups")):
        if getattr(args, flag):
            claims[claim] = getattr(args, flag).split(",")
    if args.claims:
        claims.update(json.loads(args.claims))
    return claims


def cmd_config(args: argparse.Namespace) -> None:
    """``config defaults``: every key with its default, as commented TOML; ``config check
    FILE``: validate FILE (and the ``RTSERVER_*`` environment; the TLS files load), print
    the effective configuration with its secrets masked."""
    from rtserver.backends.config import Config
    from rtserver.backends.config_toml import render

    if args.action == "defaults":
        sys.stdout.write(render(Config()))
        return
    if not args.file:
        raise SystemExit("rtserver config check: name the file to check (rtserver config check FILE)")
    config = load_config(args.file)
    if config.server.tls:
        from rtserver.backends.tls import ServerTls

        ServerTls(config.server)  # the certificate, key and client CA load, as serve would load them
    sys.stdout.write(render(config, header=f"# {args.file}: valid. The effective configuration (file and "
                                           "RTSERVER_* environment), secrets masked.\n"))


def cmd_token(args: argparse.Namespace) -> None:
    config = _config(args)
    if not config.auth.hs256_secret:
        raise SystemExit("rtserver token: the configuration has no auth.hs256_secret")
    print(mint_token(config.auth.hs256_secret, _claims(args), args.ttl))


def cmd_publish(args: argparse.Namespace) -> None:
    import httpx

    from rtserver.backends.tls import client_context
    from rtserver.publisher import Publisher, PublishError

    config = _config(args)
    token = args.token or os.environ.get("RTSERVER_TOKEN")
    if not token:
        token = mint_token(config.auth.hs256_secret, {"sub": "rtserver-cli", "roles": ["service"]}, 300)
    url = _base_url(args, config)
    tracing = Tracing.for_config(config.tracing, "rtserver-cli")
    try:
        context = client_context(args.cacert or "", args.cert or "", args.key or "")
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"rtserver publish: cannot load --cacert/--cert/--key: {exc}") from None

    async def publish() -> dict:
        async with Publisher(url, token, tracing=tracing, ssl_context=context) as pub:
            return await pub.publish(args.event, args.tenant, args.rooms.split(","),
                                     json.loads(args.data), id=args.id, traceparent=args.traceparent)

    try:
        print(json.dumps(trio.run(publish)))
    except PublishError as exc:
        raise SystemExit(f"rtserver publish: {exc}") from None
    except httpx.HTTPError as exc:
        raise SystemExit(f"rtserver publish: no answer from {url}: {exc}") from None
    finally:
        tracing.shutdown()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rtserver")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rtserver", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rtserver {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=os.environ.get("RTSERVER_CONFIG"),
                        help="TOML file (env RTSERVER_CONFIG)")
    common.add_argument("--host", default=os.environ.get("RTSERVER_HOST"), help="env RTSERVER_HOST")
    common.add_argument("--port", type=int, default=os.environ.get("RTSERVER_PORT"), help="env RTSERVER_PORT")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run a node")
    serve.add_argument("--redis-url", default=os.environ.get("RTSERVER_REDIS_URL"),
                       help="share a Redis with other nodes (env RTSERVER_REDIS_URL); none: embedded bus")
    serve.add_argument("--workers", type=int, default=os.environ.get("RTSERVER_WORKERS"),
                       help="processes sharing the port, one per core (env RTSERVER_WORKERS; above 1 needs Redis)")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", parents=[common], help="mint a development HS256 token")
    token.add_argument("--sub", required=True)
    token.add_argument("--tenant", help="healthUnitTaxId")
    token.add_argument("--roles", default="attendant", help="comma-separated")
    token.add_argument("--professional")
    token.add_argument("--patient")
    token.add_argument("--specialities")
    token.add_argument("--threads")
    token.add_argument("--presence-groups")
    token.add_argument("--claims", help="extra claims as JSON")
    token.add_argument("--ttl", type=int, default=3600, help="seconds")
    token.set_defaults(func=cmd_token)

    publish = sub.add_parser("publish", parents=[common], help="append an event through a node")
    publish.add_argument("--url", help="node base URL (default from the config)")
    publish.add_argument("--token", help="service token (default: minted from the config key)")
    publish.add_argument("--event", required=True)
    publish.add_argument("--tenant", required=True)
    publish.add_argument("--rooms", required=True, help="comma-separated room names")
    publish.add_argument("--data", default="{}", help="JSON object")
    publish.add_argument("--id")
    publish.add_argument("--traceparent")
    publish.add_argument("--cacert", help="PEM CA file that signed the node's TLS certificate (default: the system's)")
    publish.add_argument("--cert", help="PEM client certificate, for a node that asks for one (mutual TLS)")
    publish.add_argument("--key", help="PEM key of --cert (default: in --cert)")
    publish.set_defaults(func=cmd_publish)

    pages = sub.add_parser("pages", parents=[common], help="print the console and wall URLs with dev tokens")
    pages.add_argument("--url", help="server base URL (default from the config)")
    pages.set_defaults(func=cmd_pages)

    demo = sub.add_parser("demo", parents=[common],
                          help="scheduling and attendance traffic for the pages (embedded node unless --url)")
    demo.add_argument("--url", help="feed this running server instead of starting one")
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="config defaults: every key with its default; "
                                           "config check FILE: validate, print the effective configuration")
    config.add_argument("action", choices=["check", "defaults"])
    config.add_argument("file", nargs="?", help="the TOML file to check")
    config.set_defaults(func=cmd_config)

    #: The processes beside the nodes: their Redis and their metrics.
    service = argparse.ArgumentParser(add_help=False, parents=[common])
    service.add_argument("--redis-url", default=os.environ.get("RTSERVER_REDIS_URL"), help="env RTSERVER_REDIS_URL")
    service.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")

    relay = sub.add_parser("relay", parents=[service],
                           help="move PostgreSQL outbox rows into the shard streams (relay migrate: create the schema)")
    relay.add_argument("action", nargs="?", choices=["run", "migrate"], default="run")
    relay.add_argument("--postgres-dsn", default=os.environ.get("RTSERVER_POSTGRES_DSN"),
                       help="the backbone's database (env RTSERVER_POSTGRES_DSN)")
    relay.set_defaults(func=cmd_relay)

    webhooks = sub.add_parser("webhooks", parents=[service],
                              help="deliver events to partner URLs, signed (webhooks replay: retry the dead letters)")
    webhooks.add_argument("action", nargs="?", choices=["run", "replay"], default="run")
    webhooks.add_argument("--subscription", help="replay only this subscription's dead letters")
    webhooks.set_defaults(func=cmd_webhooks)

    push = sub.add_parser("push", parents=[service],
                          help="notify the phones of users with no live connection (FCM, APNs)")
    push.set_defaults(func=cmd_push)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ConfigError as exc:
        raise SystemExit(f"rtserver: {exc}") from None
