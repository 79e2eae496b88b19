"""Waits until a Kafka broker answers a metadata request (an open port is not enough).

usage: kafka_ready.py BOOTSTRAP [PID] [TIMEOUT_S]; exits 1 when the broker process dies or time runs out.
"""

import asyncio
import logging
import os
import sys
import time

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError


async def ready(bootstrap: str, pid: int | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await client.bootstrap()
            if client.cluster.brokers():
                return True
        except (KafkaError, OSError):
            pass
        finally:
            await client.close()
        await asyncio.sleep(0.5)
    return False


if __name__ == "__main__":
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    bootstrap = sys.argv[1]
    pid = int(sys.argv[2]) if len(sys.argv) > 2 else None
    timeout_s = float(sys.argv[3]) if len(sys.argv) > 3 else 90.0
    sys.exit(0 if asyncio.run(ready(bootstrap, pid, timeout_s)) else 1)
