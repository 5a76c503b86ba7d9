/**
 * The agent's admin API from the outside: where its unix socket is by default, and one
 * request over it. Used by the `skein admin` command, the lab, the demo and tests (the agent
 * serves it: agent/admin.ts).
 */
import http from 'node:http';
import { SkeinError } from '../errors.js';
import { ApiCode } from './codes.js';

/** Where the agent serves its admin API unless told otherwise (--admin-socket). */
export const DEFAULT_ADMIN_SOCKET = '/run/skein/agent.sock';

export interface AdminAnswer {
  status: number;
  body: string;
}

/** Sends `method path` to the admin socket; resolves with the status and body. */
export function adminRequest(socketPath: string, method: string, path: string, timeoutMs = 5000): Promise<AdminAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) =>
      reject(new SkeinError(ApiCode.AdminUnreachable, `agent admin API at ${socketPath}: ${err.message}`, { socketPath }, { cause: err })),
    );
    req.end();
  });
}

/** GET `path` and parse the JSON answer; a non-2xx answer rejects with its body. */
export async function adminGet<T = unknown>(socketPath: string, path: string): Promise<T> {
  const r = await adminRequest(socketPath, 'GET', path);
  if (r.status < 200 || r.status > 299) throw new SkeinError(ApiCode.AdminUnreachable, `agent admin API ${path} answered ${r.status}: ${r.body.trim()}`, { socketPath, path });
  return JSON.parse(r.body) as T;
}
