"""``rtserver demo``: realistic scheduling and attendance traffic, so both pages come alive.

It acts as the backbone and as three colleagues, over the public interfaces only: events
are published with ``POST /v1/publish`` (a service token), and the colleagues are
WebSocket clients that go online, away and offline, type in the console's thread and
send heartbeats. Tenant ``t1``; schedule ``schedule:42`` (five days of slots, then slot
changes, bookings and a burst now and then that the server turns into a digest); thread
``thread:100``; the queue and alerts of the tenant room.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable

import trio

from rtserver.backends.auth import mint_token
from rtserver.client import open_client
from rtserver.publisher import Publisher

TENANT = "t1"
SCHEDULE = "42"
THREAD = "100"
COLLEAGUES = ("bea", "caio", "duda")
LINES = ("Good morning, how can I help?", "Your appointment is confirmed for 9:30.",
         "Could you send the referral?", "The doctor is running 10 minutes late.", "Thank you!")


def page_urls(base: str, secret: str, ttl_s: int = 12 * 3600) -> dict[str, str]:
    """The two pages, each with a development token in its fragment."""
    console = mint_token(secret, {"sub": "ana", "healthUnitTaxId": TENANT, "roles": ["attendant"],
                                  "presenceGroups": ["attendants"]}, ttl_s)
    wall = mint_token(secret, {"sub": "wall-1", "healthUnitTaxId": TENANT, "roles": ["admin"],
                               "presenceGroups": ["walls"]}, ttl_s)  # a screen, not an attendant
    return {"console": f"{base}/console/#token={console}&thread={THREAD}",
            "wall": f"{base}/wall/#token={wall}&schedule={SCHEDULE}"}


def _slots(date: datetime.date) -> list[dict]:
    return [{"slotId": f"{date:%m%d}-{h:02d}{m:02d}", "start": f"{h:02d}:{m:02d}", "status": "free"}
            for h in range(8, 12) for m in (0, 30)]


async def feed(base: str, secret: str, *, rng: random.Random | None = None,
               log: Callable[[str], None] = print) -> None:
    """Publish and act until cancelled."""
    rng = rng or random.Random(7)
    service = mint_token(secret, {"sub": "demo-backbone", "roles": ["service"]}, 24 * 3600)
    async with Publisher(base, service) as pub, trio.open_nursery() as nursery:
        async def publish(event: str, rooms: list[str], **data) -> None:
            await pub.publish(event, TENANT, rooms, data)

        today = datetime.date.today()
        days = [today + datetime.timedelta(days=i) for i in range(5)]
        slots = {day: _slots(day) for day in days}
        for day in days:
            await publish("schedule.slots.generated", [f"schedule:{SCHEDULE}"], scheduleId=SCHEDULE,
                          date=day.isoformat(), slots=slots[day], count=len(slots[day]))
        log(f"demo: schedule:{SCHEDULE} has {sum(map(len, slots.values()))} slots; traffic follows")
        for name in COLLEAGUES:
            nursery.start_soon(_colleague, base, secret, name, rng.random())
        nursery.start_soon(_schedule_traffic, publish, days, slots, rng)
        nursery.start_soon(_attendance_traffic, publish, rng)


async def _schedule_traffic(publish, days, slots, rng: random.Random) -> None:
    appointments = 0
    tick = 0
    while True:
        await trio.sleep(1.2)
        tick += 1
        day = rng.choice(days)
        slot = rng.choice(slots[day])
        if tick % 15 == 0:  # a regeneration burst: the server merges it into a digest
            for slot in rng.sample(slots[day], 6) * 5:
                await publish("schedule.slots.changed", [f"schedule:{SCHEDULE}"], scheduleId=SCHEDULE,
                              date=day.isoformat(), slotId=slot["slotId"], start=slot["start"],
                              status=rng.choice(["free", "held", "blocked"]))
        elif rng.random() < 0.5:
            appointments += 1
            await publish("appointment.created", [f"schedule:{SCHEDULE}", f"tenant:{TENANT}"],
                          appointmentId=f"a{appointments}", scheduleId=SCHEDULE, slotId=slot["slotId"],
                          start=f"{day.isoformat()}T{slot['start']}", status="booked")
        else:
            await publish("schedule.slots.changed", [f"schedule:{SCHEDULE}"], scheduleId=SCHEDULE,
                          date=day.isoformat(), slotId=slot["slotId"], start=slot["start"],
                          status=rng.choice(["free", "held", "blocked"]))


async def _attendance_traffic(publish, rng: random.Random) -> None:
    position = 0
    while True:
        await trio.sleep(rng.uniform(2, 5))
        roll = rng.random()
        patient = f"p{rng.randint(100, 999)}"
        if roll < 0.3:
            position += 1
            await publish("queue:new", [f"tenant:{TENANT}"], queueId="triage", itemId=f"q{position}",
                          position=position, priority=rng.choice(["low", "medium", "high"]))
        elif roll < 0.45 and position:
            await publish("queue:taken", [f"tenant:{TENANT}"], queueId="triage", itemId=f"q{rng.randint(1, position)}",
                          takenBy=rng.choice(COLLEAGUES))
        elif roll < 0.6:
            await publish("critical_alert", [f"tenant:{TENANT}", f"patient:{patient}"], id=f"al-{patient}",
                          patientId=patient, type=rng.choice(["fever", "chest pain", "low SpO2"]), severity="high")
        elif roll < 0.75:
            await publish("new_patient", [f"tenant:{TENANT}"], patientId=patient, priority="medium")
        else:
            await publish("thread:message", [f"thread:{THREAD}"], threadId=THREAD, messageId=f"m{rng.random():.6f}",
                          senderId=rng.choice(COLLEAGUES), text=rng.choice(LINES))


async def _colleague(base: str, secret: str, name: str, seed: float) -> None:
    """One colleague: online for a while (away now and then, typing in the thread), offline
    for a while, again."""
    rng = random.Random(seed)
    token = mint_token(secret, {"sub": name, "healthUnitTaxId": TENANT, "roles": ["attendant"],
                                "presenceGroups": ["attendants"]}, 24 * 3600)
    url = base.replace("http", "ws", 1) + "/hub/ws"
    while True:
        try:
            async with open_client(url, token) as client:
                await client.subscribe(f"thread:{THREAD}")
                with trio.move_on_after(rng.uniform(40, 90)):
                    while True:
                        await trio.sleep(rng.uniform(3, 8))
                        roll = rng.random()
                        if roll < 0.4:
                            await client.emit("typing:start", f"thread:{THREAD}")
                            await trio.sleep(rng.uniform(1, 3))
                            await client.emit("typing:stop", f"thread:{THREAD}")
                        elif roll < 0.55:
                            await client.emit("presence:away")
                        else:
                            await client.emit("presence:online")
        except Exception as exc:  # a restarting server: try again shortly
            print(f"demo: {name} reconnects ({exc})")
        await trio.sleep(rng.uniform(5, 20))  # offline (after the grace period)
