"""Loopback relay to the apiserver: ``127.0.0.1:<port>`` in the root namespace → ``<cp ip>:6443`` in the cp namespace.

The user's kubectl, the suite and the node agents live in the root namespace,
which the suite never gives addresses or routes. The relay binds its listening
socket there, then moves itself into the control-plane namespace: sockets keep
the namespace they were created in, so each upstream connection is opened
inside ``cp`` while clients keep connecting on loopback. TLS passes through
untouched (the apiserver cert carries 127.0.0.1 as a SAN).

Run: ``python -m proxysuite.cluster.local.relay --listen 127.0.0.1:PORT --netns NS --target IP:PORT``
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from pyroute2 import netns as _netns


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001
            pass


def bind_listener(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def serve(listener: socket.socket, target: tuple[str, int]) -> None:
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--target", required=True)
    args = ap.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    listener = bind_listener(host, int(port))
    _netns.setns(args.netns)  # from here on, new sockets are created inside the control-plane namespace
    thost, tport = args.target.rsplit(":", 1)
    try:
        asyncio.run(serve(listener, (thost, int(tport))))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
