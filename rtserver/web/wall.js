// The schedule wall: a schedule's days and slots, live, from its snapshot, changes and digests.
import { connect, el, settings } from "/web/page.js";

const scheduleId = settings.schedule || "42";
const client = connect([`schedule:${scheduleId}`]);
document.getElementById("schedule-id").textContent = `#${scheduleId}`;

const days = new Map(); // date -> generated data
const slots = new Map(); // slotId -> {date, start, end, status}
const booked = new Map(); // slotId -> appointment status

function applyChange(event, data) {
  if (event === "schedule.slots.generated") {
    days.set(data.date, data);
    for (const slot of data.slots || []) slots.set(slot.slotId, { date: data.date, ...slot });
  } else if (event === "schedule.slots.changed" && data.slotId) {
    slots.set(data.slotId, { ...slots.get(data.slotId), ...data });
  } else if (event.startsWith("appointment.") && data.slotId) {
    booked.set(data.slotId, data.status || "booked");
  }
}

const flashed = new Set();
function render() {
  const byDay = new Map([...days.keys()].sort().map((d) => [d, []]));
  for (const [slotId, slot] of slots) {
    if (!byDay.has(slot.date)) byDay.set(slot.date, []);
    byDay.get(slot.date).push([slotId, slot]);
  }
  const columns = [...byDay].sort().map(([date, list]) => el("div", { class: "day", "data-date": date },
    el("h3", {}, date),
    ...list.sort((a, b) => String(a[1].start).localeCompare(String(b[1].start))).map(([slotId, slot]) => {
      const appointment = booked.get(slotId);
      const status = appointment && appointment !== "cancelled" ? "booked" : slot.status || "free";
      return el("div", { class: `slot ${status}${flashed.has(slotId) ? " flash" : ""}`, "data-slot": slotId, "data-status": status },
        el("span", {}, slot.start || slotId), el("span", {}, status));
    })));
  document.getElementById("days").replaceChildren(...columns);
  document.getElementById("summary").textContent = `${byDay.size} days · ${slots.size} slots · ${[...booked.values()].filter((s) => s !== "cancelled").length} booked`;
}

client.on("schedule.snapshot", (frame) => {
  days.clear(); slots.clear(); booked.clear();
  for (const item of Object.values(frame.data.days)) applyChange(item.event, item.data);
  for (const item of Object.values(frame.data.slots)) applyChange(item.event, item.data);
  for (const item of Object.values(frame.data.appointments)) applyChange(item.event, item.data);
  render();
});
function live(frame) {
  applyChange(frame.event, frame.data);
  if (frame.data.slotId) { flashed.add(frame.data.slotId); setTimeout(() => { flashed.delete(frame.data.slotId); render(); }, 1500); }
  render();
}
for (const event of ["schedule.slots.generated", "schedule.slots.changed", "appointment.created", "appointment.status.changed"]) {
  client.on(event, live);
}
client.on("schedule.digest", (frame) => {
  for (const change of frame.data.changes) applyChange(change.event, change.data);
  const digest = document.getElementById("digest");
  digest.textContent = `${frame.merged || frame.data.changes.length} updates`;
  digest.dataset.count = String(frame.merged || frame.data.changes.length);
  setTimeout(() => { digest.textContent = ""; }, 3000);
  render();
});
client.on("reset", () => { days.clear(); slots.clear(); booked.clear(); render(); });
