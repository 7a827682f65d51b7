"""Schedule projector actor: keeps every schedule's last-value record up to date (docs/protocol.md, Schedules).

Contract
--------
Mailbox
    The store's feed of entries (``ScheduleStore.read``): on Redis, this node's share of
    the consumer group ``rt:schedules`` (each entry goes to one node of the cluster); on
    the memory bus, the bus's live feed.
Owns
    Nothing but its position in that feed: the records live in the store (Redis, or the
    memory store), so a snapshot never depends on this actor having been alive when an
    event arrived.
Replies
    None. Each batch's updates (``protocol.schedules.updates``: the days, slots and
    appointments an event sets) are committed with the batch, atomically; a subscriber
    to ``schedule:{id}`` reads the record as a snapshot (``ScheduleStore.snapshot``).
    The live side of a schedule room (digest frames) is the room's coalescing.
Failure
    A store that cannot be reached (Redis down) is retried with backoff; what was read
    and not committed stays pending in the group and is read again (by this node's
    consumer, or claimed by another). Anything else ends the node.
Blocking
    On the store only.
"""

from __future__ import annotations

import structlog
import trio

from protocol.errors import ReplyError
from protocol.schedules import updates
from rtserver.backends.retry import Backoff
from rtserver.backends.schedules import ScheduleStore

log = structlog.get_logger("rtserver.schedules")


class ScheduleProjector:
    def __init__(self, store: ScheduleStore) -> None:
        self.store = store
        #: Entries projected since start (for metrics).
        self.projected = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with self.store.opened():
            task_status.started()
            backoff = Backoff()
            while True:
                try:
                    for batch in await self.store.read():
                        await self.store.commit(batch, [u for e in batch.events for u in updates(e)])
                        self.projected += len(batch.events)
                    backoff.reset()
                except ReplyError as exc:
                    if not exc.temporary:
                        raise
                    log.warning("schedule_projection_paused", error=exc.message, retry_in_s=backoff.next_s)
                    await backoff.pause()
