/**
 * A unix socket only root can open, for the agent's doors that must not be reachable from a
 * hostNetwork pod (the admin API, skein-cni's capture requests): the folder is created 0700
 * when missing, a socket left by a previous agent is replaced (never any other kind of file),
 * and the socket itself is 0600 before anything can connect that would not be allowed to.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:net';
import { dirname } from 'node:path';
import { SkeinError } from '../errors.js';

export async function listenRootOnly(server: Server, path: string, notSocket: { code: string; flag: string }): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket()) throw new SkeinError(notSocket.code, `${notSocket.flag} ${path} exists and is not a socket`, { path });
    unlinkSync(path);
  }
  const listening = new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => resolve());
  });
  // The umask is process-wide: narrow it only around listen(), which binds the socket before
  // it returns, so no other file the agent creates meanwhile is affected.
  const mask = process.umask(0o177);
  try {
    server.listen(path);
  } finally {
    process.umask(mask);
  }
  await listening;
  chmodSync(path, 0o600);
}
