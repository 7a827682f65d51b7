// Drives socket.io-client v4 for the test suite: one JSON command per stdin line, one
// JSON report per stdout line (tests/support/socketio_clients.py speaks it).
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const sockets = new Map();
const report = (message) => process.stdout.write(JSON.stringify(message) + "\n");

function connect({ id, url, auth, options }) {
  const socket = io(url, { auth, transports: ["websocket"], reconnectionDelay: 100,
                           reconnectionDelayMax: 500, ...options });
  sockets.set(id, socket);
  socket.on("connect", () => report({ id, type: "connect", sid: socket.id, recovered: socket.recovered }));
  socket.on("connect_error", (err) => report({ id, type: "connect_error", message: err.message, data: err.data ?? null }));
  socket.on("disconnect", (reason) => report({ id, type: "disconnect", reason }));
  socket.onAny((event, ...args) => report({ id, type: "event", event, args }));
  socket.io.on("open", () => {
    socket.io.engine.on("upgrade", (transport) => report({ id, type: "upgrade", transport: transport.name }));
  });
}

async function emit({ id, event, args, seq }) {
  const socket = sockets.get(id);
  if (seq === undefined) {
    socket.emit(event, ...args);
    return;
  }
  try {
    const answer = await socket.timeout(5000).emitWithAck(event, ...args);
    report({ id, type: "ack", seq, answer });
  } catch (err) {
    report({ id, type: "ack", seq, error: err.message });
  }
}

const commands = {
  connect,
  emit,
  disconnect: ({ id }) => sockets.get(id).disconnect(),
  // A network cut as the client sees it: the transport closes, the client reconnects.
  drop: ({ id }) => sockets.get(id).io.engine.close(),
};

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  commands[command.op](command);
});
