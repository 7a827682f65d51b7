"""A dashboard's model of a schedule, and bursts of schedule events, for the tests."""


def slot_events(schedules=3, days=4):
    """A generation burst, then changes and bookings: (event, rooms, data) in order."""
    out = []
    for s in range(schedules):
        for d in range(days):
            out.append(("schedule.slots.generated", [f"schedule:{s}"],
                        {"scheduleId": str(s), "date": f"2026-12-0{d + 1}", "slots": [f"{d}-a", f"{d}-b"]}))
    for s in range(schedules):
        out.append(("schedule.slots.changed", [f"schedule:{s}"],
                    {"scheduleId": str(s), "date": "2026-12-01", "slotId": "0-a", "status": "booked"}))
        out.append(("appointment.created", [f"schedule:{s}", "tenant:t1"],
                    {"appointmentId": f"ap{s}", "scheduleId": str(s), "slotId": "0-a", "status": "booked"}))
        out.append(("schedule.slots.generated", [f"schedule:{s}"],
                    {"scheduleId": str(s), "date": "2026-12-02", "slots": ["regenerated"]}))
    return out


def apply(state: dict, frame: dict) -> None:
    """What a dashboard does with the frames of a schedule room."""
    data = frame["data"]
    if frame["event"] == "schedule.snapshot":
        state.clear()
        state.update({f"day:{k}": v["data"] for k, v in data["days"].items()})
        state.update({f"slot:{k}": v["data"] for k, v in data["slots"].items()})
        state.update({f"appointment:{k}": v["data"] for k, v in data["appointments"].items()})
    elif frame["event"] == "schedule.digest":
        for change in data["changes"]:
            apply(state, {"event": change["event"], "data": change["data"]})
    elif frame["event"] == "schedule.slots.generated":
        state[f"day:{data['date']}"] = data
    elif frame["event"] == "schedule.slots.changed":
        state[f"slot:{data['slotId']}"] = data
    elif frame["event"].startswith("appointment."):
        state[f"appointment:{data['appointmentId']}"] = data


def truth(events, schedule: str) -> dict:
    state: dict = {}
    for event, rooms, data in events:
        if schedule in rooms:
            apply(state, {"event": event, "data": data})
    return state
