/**
 * A lab process reachable from the host's loopback, as `kubectl port-forward` would make it:
 * the lab opens a listening socket on 127.0.0.1 in the host netns and hands it (fd 3) to a
 * forwarder (`skein lab forward-fd`) running in the lab netns of the target, which relays each
 * accepted connection there. No host route to the lab's addresses is needed. The forwarder
 * runs in the lab's cgroups, so `lab down` ends it.
 */
import net from 'node:net';
import { SkeinError } from '../errors.js';
import { skeinCommand } from '../paths.js';
import { LabCode } from './codes.js';
import { startInNetns } from './mesh.js';
import type { LabProcess, LabRecord } from './registry.js';

/** A listening socket on the host's loopback; its fd is handed to the forwarder. */
async function hostListener(port: number): Promise<{ server: net.Server; fd: number; port: number }> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve());
  });
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    server.close();
    throw new SkeinError(LabCode.ForwardFailed, 'cannot hand the host port to the forwarder (no fd)');
  }
  return { server, fd, port: (server.address() as net.AddressInfo).port };
}

/**
 * Forwards 127.0.0.1:`port` on the host (0: a free one) to `to` (HOST:PORT) in `netns`.
 * Resolves with the forwarder's process and the host port.
 */
export async function startPortForward(rec: LabRecord, name: string, netns: string, cgroupRel: string, to: string, port = 0): Promise<{ process: LabProcess; port: number }> {
  const listener = await hostListener(port);
  try {
    const proc = startInNetns(rec, 'forward', name, netns, cgroupRel, [...skeinCommand(), 'lab', 'forward-fd', '--to', to], {}, [listener.fd]);
    return { process: proc, port: listener.port };
  } finally {
    listener.server.close(); // the forwarder holds its own copy of the socket
  }
}
