"""Events as a backbone publishes them."""

from __future__ import annotations

def appointment(i, tenant="t1", rooms=("professional:1",), **extra):
    return {"event": "appointment.created", "tenant": tenant, "rooms": list(rooms),
            "data": {"appointmentId": str(i)}, **extra}


def alert(i: int, room: str = "tenant:t1") -> dict:
    """A ``critical_alert`` for ``room``, its data's id ``a{i}``."""
    return {"event": "critical_alert", "tenant": "t1", "rooms": [room],
            "data": {"id": f"a{i}", "patientId": "p1", "type": "symptom", "severity": "high"}}
