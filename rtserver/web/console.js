// The attendant console: colleagues' presence, a thread with live typing, the queue, alerts.
import { connect, el, settings } from "/web/page.js";

const threadId = settings.thread || "100";
const thread = `thread:${threadId}`;
const client = connect(["presence:attendants", thread]);
document.getElementById("thread-name").textContent = `#${threadId}`;

// -- presence ------------------------------------------------------------------------------
const people = new Map(); // userId -> state
function renderPresence() {
  const list = document.getElementById("presence");
  list.replaceChildren(...[...people].sort().map(([user, state]) =>
    el("li", { "data-user": user, "data-state": state }, el("span", { class: `dot ${state}` }), user,
       el("span", { class: "muted" }, state))));
}
client.on("hello", (hello) => { document.getElementById("me").textContent = hello.user || ""; });
client.on("presence:snapshot", (frame) => {
  people.clear();
  for (const user of frame.data.users) people.set(user.userId, user.state);
  renderPresence();
});
for (const state of ["online", "away", "offline"]) {
  client.on(`attendant:${state}`, (frame) => { people.set(frame.data.userId, state); renderPresence(); });
}
document.getElementById("go-online").onclick = () => client.emit("presence:online");
document.getElementById("go-away").onclick = () => client.emit("presence:away");

// -- the thread, with typing indicators ------------------------------------------------------
const typing = new Map(); // userId -> expiry (ms)
function renderTyping() {
  const now = Date.now();
  for (const [user, until] of typing) if (until < now) typing.delete(user);
  const who = [...typing.keys()];
  document.getElementById("typing").textContent = who.length ? `${who.join(", ")} typing…` : "";
}
setInterval(renderTyping, 500);
client.on("thread:typing", (frame) => {
  if (frame.data.typing) typing.set(frame.data.userId, Date.now() + 6000); // the server stops it after 6 s too
  else typing.delete(frame.data.userId);
  renderTyping();
});
client.on("thread:message", (frame) => {
  const d = frame.data;
  typing.delete(d.senderId);
  const list = document.getElementById("messages");
  list.append(el("li", { "data-id": frame.id }, el("b", {}, d.senderId || "?"), d.text || ""));
  list.scrollTop = list.scrollHeight;
});
let typingSent = 0;
const compose = document.getElementById("compose");
compose.addEventListener("input", () => {
  if (Date.now() - typingSent > 2000) {
    typingSent = Date.now();
    client.emit("typing:start", {}, thread).catch(() => {});
  }
});
compose.addEventListener("blur", () => { typingSent = 0; client.emit("typing:stop", {}, thread).catch(() => {}); });

// -- queue and alerts -----------------------------------------------------------------------
const queue = new Map(); // itemId -> data
function renderQueue() {
  const items = [...queue.values()].filter((q) => !q.takenBy).sort((a, b) => (a.position ?? 0) - (b.position ?? 0));
  document.getElementById("queue").replaceChildren(...items.map((q) =>
    el("li", { "data-item": q.itemId }, `#${q.position ?? "?"}`, el("span", {}, q.itemId),
       el("span", { class: "muted" }, q.priority || ""))));
}
for (const event of ["queue:new", "queue:updated", "queue:taken"]) {
  client.on(event, (frame) => { queue.set(frame.data.itemId, { ...queue.get(frame.data.itemId), ...frame.data }); renderQueue(); });
}
let unread = 0;
function addAlert(frame, text, severity) {
  const alertId = frame.data.id || frame.id;
  const button = el("button", { class: "secondary" }, "read");
  const item = el("li", { class: "alert", "data-id": frame.id }, el("span", { class: `sev-${severity}` }, frame.event), text, button);
  button.onclick = async () => {
    await client.emit("mark_alert_read", { alertId, patientId: frame.data.patientId });
    item.classList.add("read");
    button.remove();
    document.getElementById("unread").textContent = String(--unread);
  };
  document.getElementById("alerts").prepend(item);
  document.getElementById("unread").textContent = String(++unread);
}
client.on("critical_alert", (f) => addAlert(f, `patient ${f.data.patientId}: ${f.data.type || ""}`, f.data.severity || "high"));
client.on("new_patient", (f) => addAlert(f, `patient ${f.data.patientId} (${f.data.priority || "?"})`, "low"));
client.on("priority_update", (f) => addAlert(f, `patient ${f.data.patientId}: ${f.data.oldPriority} → ${f.data.newPriority}`, "low"));
