"""Benchmark: round trips, latency and throughput of each operation against PostgreSQL.

    python bench.py                        # local PostgreSQL, 10 ms of added round-trip latency
    python bench.py --latency-ms 0 --seconds 5 --table-sizes 1000,1000000

Starts main.py and a textbook SQLModel app ("naive") under uvicorn, each reaching the database
through a TCP proxy run here that adds latency and counts round trips at the wire.
"""

import asyncio
import threading


class Proxy:
    """A TCP proxy on loopback that delays every chunk by `latency` seconds each way,
    counts round trips (a client flight that follows a server answer) and can be cut."""

    def __init__(self, target_host: str, target_port: int, latency: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.latency = latency
        self.round_trips = 0
        self.loop = asyncio.new_event_loop()
        self.connections: set[asyncio.StreamWriter] = set()
        self.server = self.loop.run_until_complete(asyncio.start_server(self.handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self.connections |= {client_writer, server_writer}
        awaiting_answer = False

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool) -> None:
            nonlocal awaiting_answer
            while data := await reader.read(65536):
                if from_client and not awaiting_answer:
                    self.round_trips += 1
                awaiting_answer = from_client
                self.loop.call_later(self.latency, writer.write, data)
            await asyncio.sleep(self.latency)
            writer.close()

        await asyncio.gather(
            pump(client_reader, server_writer, True), pump(server_reader, client_writer, False), return_exceptions=True
        )
        self.connections -= {client_writer, server_writer}

    def _call(self, function) -> None:
        asyncio.run_coroutine_threadsafe(function(), self.loop).result()

    def cut(self) -> None:
        """Close every connection and refuse new ones, as if the database had gone away."""

        async def cut() -> None:
            self.server.close()
            for writer in list(self.connections):
                writer.transport.abort()

        self._call(cut)

    def restore(self) -> None:
        async def restore() -> None:
            self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)

        self._call(restore)
