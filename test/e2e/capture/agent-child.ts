/**
 * A stand-in agent for the restart test: starts capture on the given pin root and cgroup,
 * enrols one pod, serves its outbound listener answering "<tag>", prints one JSON line
 * {ready, pid, programs} and runs until killed.
 * Usage: node --import tsx agent-child.ts '<json: {pinRoot, cgroupPath, pod, tag}>'
 */
import net from 'node:net';
import { CaptureManager } from '../../../src/capture/capture-manager.js';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const capture = new CaptureManager({ pinRoot: cfg.pinRoot, cgroupPath: cfg.cgroupPath });
await capture.start();
const pod = await capture.enroll(cfg.pod);
const server = net.createServer((s) => {
  let dst = '';
  try {
    const d = capture.originalDestination(s);
    dst = `${d.address}:${d.port}`;
  } catch (err) {
    dst = `error ${(err as Error).message}`;
  }
  s.on('error', () => undefined);
  s.end(`${cfg.tag} ${dst}\n`);
});
const inbound = net.createServer((s) => {
  s.on('error', () => undefined);
  s.end(`${cfg.tag}-inbound ${s.localAddress}:${s.localPort}\n`);
});
inbound.listen({ fd: pod.listeners.inboundPlaintext });
server.listen({ fd: pod.listeners.outbound }, () => {
  process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid, programs: capture.programIds() })}\n`);
});
setTimeout(() => process.exit(3), 60_000).unref(); // never outlive a broken test by much
setInterval(() => undefined, 1000);
