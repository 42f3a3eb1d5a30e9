"""The message engine: one delivery in, one ``Verdict`` out. No I/O, no threads, no event loop.

The consumer (``pubsubpy._consume.loop``) feeds it deliveries and turns its verdicts
into broker operations. The checks of a delivery, in order, each ending the
message at once:

1. ``decode_error``              the transport could not decode its properties/headers   (``checks``)
2. ``too_large``                 body over ``max_message_size`` (never parsed)           (``checks``)
3. ``unsupported_content_type``  ``content_type`` other than JSON, or an encoding          (``checks``)
                                 (gzip...) we do not read; a missing type is read as JSON
4. deferred                      no subscription here matches the key, or no schema for it  (``plan``)
                                 is registered here: another version of this service may
                                 know it (a rolling deploy), so it goes back through a
                                 retry queue, without counting as an attempt, for up to
                                 ``unknown_key_window``
   ``unknown_event``             ...and after that window; also at once when a matching
                                 handler cannot accept the registered schema, or the
                                 version that arrived is older than any registered
5. ``decode_error``              nested deeper than ``max_json_depth`` (checked before     (``decoding``)
                                 any parser), not UTF-8 JSON, or not a JSON object
6. ``validation_error``          the registered schema rejects it                        (``decoding``)
   ``unknown_event``             a handler wants a version no upcaster reaches              (``plan``)
7. handlers: each matching handler runs once (``runs``); ``Verdict.fold`` decides
   (retry the failed ones, dead-letter the rejected or exhausted ones)          (``verdict``)

Modules: ``checks`` (the checks before reading), ``plan`` (per routing key and
version: handlers, schema, what each handler gets), ``decoding`` (the body),
``runs`` (one handler run), ``verdict`` (one message's outcome), ``engine`` (the
order, and the calls).
"""

from pubsubpy._engine.engine import AwaitOnLoop, Call, Engine, Item, RunTimed, Work
from pubsubpy._engine.verdict import Verdict

__all__ = ["AwaitOnLoop", "Call", "Engine", "Item", "RunTimed", "Verdict", "Work"]
