/**
 * The controller's probes on its metrics port, for the Deployment's livenessProbe and
 * readinessProbe: /healthz/live answers while the event loop runs; /healthz/ready only
 * once the controller serves (CA loaded, index built, config stream and CA listening), so
 * a Service sends agents to a replica only when it can answer them.
 */
import type * as http from 'node:http';

export const LIVE_PATH = '/healthz/live';
export const READY_PATH = '/healthz/ready';

export function healthHandler(ready: () => boolean): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || (path !== LIVE_PATH && path !== READY_PATH)) return false;
    const ok = path === LIVE_PATH || ready();
    res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'starting\n');
    return true;
  };
}
