"""Dead-letter records: what a writer sends to a topic's dead-letter topic.

:func:`dlq_record` gives a message that cannot be stored the shape of ``trades_dlq``
records (the reason, the payload as text, exactly as base64 when it is not UTF-8, and the
source topic/partition/offset); :data:`DLQ_PAYLOAD_MAX_BYTES` is how much of the payload a
record carries, so that it fits the broker's message size limit.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

DLQ_PAYLOAD_MAX_BYTES = 64 * 1024  # a DLQ record must fit the broker's message size limit


def dlq_record(
    reason: str, raw: bytes | None, topic: str, partition: int, offset: int, detected_by: str
) -> bytes:
    """Same shape as ``trades_dlq`` records (jobs/ingest/schema.py), with the source offset.

    ``payload`` is the message as text (invalid UTF-8 replaced by U+FFFD; then also
    ``payload_base64``, the exact bytes). A message over :data:`DLQ_PAYLOAD_MAX_BYTES` is cut
    there (``payload_truncated``, ``payload_bytes``): the record must fit the broker's size
    limit; the whole message stays at its source offset."""
    data = raw or b""
    cut = data[:DLQ_PAYLOAD_MAX_BYTES]
    rec: dict[str, Any] = {
        "reason": reason[:2_000],
        "payload": cut.decode("utf-8", errors="replace"),
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "detected_by": detected_by,
        "detected_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        rec["payload_base64"] = base64.b64encode(cut).decode()
    if len(data) > len(cut):
        rec["payload_truncated"] = True
        rec["payload_bytes"] = len(data)
    return json.dumps(rec).encode()
