// Forces a full garbage collection in the Node process whose inspector listens on
// 127.0.0.1:PORT (opened by SIGUSR1), over the DevTools protocol. Run inside that process's
// netns. Used by the soak test so RSS samples compare live memory, not the point V8's heap
// sawtooth is at between major GCs.
import WebSocket from 'ws';

const port = process.argv[2] ?? '9229';
const list = await (await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(5000) })).json();
const ws = new WebSocket(list[0].webSocketDebuggerUrl);
await new Promise((resolve, reject) => {
  ws.once('open', resolve);
  ws.once('error', reject);
});
ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }));
await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no answer to HeapProfiler.collectGarbage')), 10_000);
  ws.on('message', (m) => {
    if (JSON.parse(String(m)).id === 1) {
      clearTimeout(timer);
      resolve();
    }
  });
});
ws.close();
