// What both pages share: settings from the URL fragment, the client, the connection badges.
import { RtClient } from "/rtclient.js";

/** Settings from the fragment (never sent to a server): #token=…&thread=…&schedule=…&transports=sse,poll */
export const settings = Object.fromEntries(new URLSearchParams(location.hash.slice(1)));

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

/** A started client for this page, with its state and transport shown in the header. */
export function connect(rooms) {
  const options = { getToken: () => settings.token, rooms };
  if (settings.transports) options.transports = settings.transports.split(",");
  const client = new RtClient(options);
  const state = document.getElementById("state");
  const transport = document.getElementById("transport");
  client.on("state", (s) => { state.textContent = s; state.className = `badge ${s}`; });
  client.on("transport", (t) => { transport.textContent = t; });
  client.on("close", (c) => console.info("rtclient closed", c.code, c.reason, c.action));
  window.rt = client; // for the console and the tests
  return client.start();
}
