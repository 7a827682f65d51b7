'use strict';
// The replay server of bench/loadgen_frames.py: just enough WebSocket (RFC 6455, server side,
// no extensions) to send peerbench's subscriber process the frames of one server's shape.
//   node loadgen_frames_server.js <port> <shape.json> <events/s> <events>
// shape.json: {"hello": text|null, "ack": text|null, "prefix": text, "suffix": text, "size": bytes}
//   hello:  sent once the handshake is answered (rtserver's hello); null: nothing (nchan)
//   ack:    when set, a socket joins once the client's first frame (its `sub`) came, answered
//           with this; when null, it joins at once (rooms in the URL, or nchan)
//   prefix/suffix: around each payload (an `evt` envelope); empty for nchan
// stdout: "listening" once bound; stdin: "start" sends the events, each to every joined
// socket in join order; the payload is peerbench's ({"t":<ns, CLOCK_MONOTONIC>,"s":<seq>,
// "p":"x…"}, `size` bytes, as its publisher writes it), stamped as the event is sent.
const net = require('net');
const crypto = require('crypto');
const fs = require('fs');

const [port, shapeFile, rate, events] = [+process.argv[2], process.argv[3], +process.argv[4], +process.argv[5]];
const shape = JSON.parse(fs.readFileSync(shapeFile, 'utf8'));
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const PAD = 'x'.repeat(shape.size + 64);
const joined = [];

function frame(text) {
  const body = Buffer.from(text);
  const n = body.length;
  const head = n < 126 ? Buffer.from([0x81, n])
    : n < 65536 ? Buffer.from([0x81, 126, n >> 8, n & 255])
      : Buffer.from([0x81, 127, 0, 0, 0, 0, (n >>> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255]);
  return Buffer.concat([head, body]);
}

function payload(t, s) {
  const head = '{"t":' + t + ',"s":' + s + ',"p":"';
  return head + PAD.slice(0, Math.max(0, shape.size - head.length - 2)) + '"}';
}

const HELLO = shape.hello === null ? null : frame(shape.hello);
const ACK = shape.ack === null ? null : frame(shape.ack);

net.createServer((sock) => {
  sock.setNoDelay(true);
  sock.on('error', () => {});
  let pending = Buffer.alloc(0);
  let upgraded = false;
  let member = false;
  sock.on('data', (data) => {
    pending = Buffer.concat([pending, data]);
    if (!upgraded) {
      const end = pending.indexOf('\r\n\r\n');
      if (end < 0) return;
      const key = /sec-websocket-key:\s*(\S+)/i.exec(pending.subarray(0, end).toString('latin1'))[1];
      pending = pending.subarray(end + 4);
      upgraded = true;
      const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
      sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Accept: ' + accept + '\r\n\r\n');
      if (HELLO) sock.write(HELLO);
      if (!ACK) { member = true; joined.push(sock); }
    }
    // the client's first frame (masked, short): its `sub`
    if (!member && pending.length >= 2 && pending.length >= 6 + (pending[1] & 127)) {
      member = true;
      sock.write(ACK);
      joined.push(sock);
    }
  });
}).listen(port, '127.0.0.1', () => process.stdout.write('listening\n'));

let seq = 0;
process.stdin.on('data', (d) => {
  if (!String(d).includes('start')) return;
  const timer = setInterval(() => {
    const out = frame(shape.prefix + payload(Number(process.hrtime.bigint()), seq) + shape.suffix);
    seq++;
    for (const sock of joined) sock.write(out);
    if (seq >= events) clearInterval(timer);
  }, 1000 / rate);
});
