/**
 * Stand-in for the old agent in handover.test.ts (a child process: the new agent's side of the
 * handover blocks its thread, so the two cannot share one). Holds three real TCP listening
 * sockets, as an agent holds a pod's 15001/15006/15008, serves the handover socket, and once
 * the new side took over closes its own copies (as the drain does) and exits.
 * usage: handover-old-agent.ts SOCKET_PATH
 */
import net from 'node:net';
import { HandoverServer } from '../../../src/agent/handover.js';
import { loadNative } from '../../../src/capture/native.js';
import { silentLogger } from '../../../src/telemetry/log.js';

const path = process.argv[2]!;
const listen = () =>
  new Promise<net.Server>((resolve) => {
    const s = net.createServer((c) => c.end('old\n'));
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
const servers = await Promise.all([listen(), listen(), listen()]);
const fdOf = (s: net.Server) => (s as unknown as { _handle: { fd: number } })._handle.fd;
const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
let resumed = 0;
const handover: HandoverServer = new HandoverServer({
  path,
  fdPassing: loadNative(),
  log: silentLogger(),
  drainMs: 1234,
  listeners: async () => [{ uid: 'pod-1', netnsCookie: 42n, slot: 7, listeners: { outbound: fdOf(servers[0]!), inboundPlaintext: fdOf(servers[1]!), tunnel: fdOf(servers[2]!), address: '127.0.0.1' } }],
  resume: () => {
    resumed++;
    process.stdout.write(`${JSON.stringify({ resumed })}\n`);
  },
  takeover: async (): Promise<void> => handover.stopListening(),
  onHandedOver: () => {
    // The drain: stop accepting here; the sockets live on in the new process.
    Promise.all(servers.map((s) => new Promise((r) => s.close(r)))).then(() => {
      process.stdout.write(`${JSON.stringify({ closed: true })}\n`);
      process.exit(0);
    });
  },
});
await handover.listen();
process.stdout.write(`${JSON.stringify({ ports })}\n`);
