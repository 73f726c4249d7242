"""A small, fast HTTP/1.1 server on loopback for the load tests (asyncio, keep-alive).

Run as ``python tests/perf_loopback_server.py PORT_FILE``: it binds 127.0.0.1:0,
writes the port to PORT_FILE and answers every request with ``ok``. It is
deliberately cheaper per request than Locust, so that an unthrottled Locust
run saturates the generator's CPU before the server's.
"""

import asyncio
import sys

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
# GET /big answers 256 KiB from one preallocated buffer: nearly free to send, but the
# client has to read and count every byte, so Locust, not this server, runs out of CPU.
BIG = b"x" * (256 * 1024)
BIG_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n" % len(BIG) + BIG


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.t.write(BIG_REPLY if head.startswith(b"GET /big") else REPLY)
            if b"connection: close" in head.lower():
                self.t.close()
                return


async def main(port_file):
    server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", 0, backlog=1024)
    with open(port_file, "w") as fh:
        fh.write(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
