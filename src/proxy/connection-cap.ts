/**
 * A cap on the connections one listener holds at once. Each pod has its own 15001, 15006 and
 * 15008 listeners, so a cap per listener is a cap per pod and port: one pod opening
 * connections without end exhausts its own budget, not the node's file descriptors or the
 * other pods' service. Over the cap the kernel's accept is answered by Node closing the new
 * connection at once ('drop'); each one is reported with the listener's stable code.
 */
import type { Server } from 'node:net';

/** Default connections per pod and listener: well above what one pod legitimately holds. */
export const DEFAULT_MAX_CONNECTIONS_PER_LISTENER = 16_384;

export function capConnections(server: Server, max: number | undefined, code: string, onRefusal: ((code: string) => void) | undefined): void {
  server.maxConnections = max ?? DEFAULT_MAX_CONNECTIONS_PER_LISTENER;
  server.on('drop', () => onRefusal?.(code));
}
