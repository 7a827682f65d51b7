// Node's ws client (npm), as a test drives it: node ws_client.mjs URL COUNT
// It offers permessage-deflate (ws's default) and prints one JSON line per step:
// {"op":"open","extensions":...}, {"op":"evt","data":...} for each event, then
// {"op":"close","code":...,"bytesRead":...} once COUNT events came (it closes) or the server closed.
import WebSocket from 'ws';

const [url, count] = process.argv.slice(2);
const ws = new WebSocket(url);
let events = 0;
const say = (line) => process.stdout.write(JSON.stringify(line) + '\n');
ws.on('open', () => say({ op: 'open', extensions: ws.extensions }));
ws.on('message', (data) => {
  const frame = JSON.parse(data);
  if (frame.op !== 'evt') return;
  say({ op: 'evt', data: frame.data });
  if (++events >= +count) ws.close(1000);
});
ws.on('close', (code) => { say({ op: 'close', code, bytesRead: ws._socket ? ws._socket.bytesRead : null }); process.exit(0); });
ws.on('error', (err) => { say({ op: 'error', message: String(err) }); process.exit(1); });
