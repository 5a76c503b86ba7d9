/**
 * `skein admin`: one request to a node agent's admin API over its root-only unix socket,
 * the answer printed as the agent sent it (JSON), like `istioctl x ztunnel-config` or
 * `curl --unix-socket` with the path known.
 *
 *   skein admin [--socket PATH] [GET|POST] PATH        the agent on this machine
 *   skein admin --lab ID --node NAME [GET|POST] PATH   one of a lab's agents
 */
import { parseArgs } from 'node:util';
import { adminRequest, DEFAULT_ADMIN_SOCKET } from '../api/agent-admin.js';
import { adminSocketOf } from '../lab/mesh.js';
import { resolveLab } from '../lab/registry.js';

const USAGE = `usage: skein admin [--socket PATH | --lab ID --node NAME] [GET|POST] PATH
  PATH: /config_dump /workloads /certs /stats /capture, POST /logging?level=debug
  --socket PATH   the agent's admin socket (default ${DEFAULT_ADMIN_SOCKET})
  --lab ID --node NAME   a lab agent's socket instead (--lab may be left out when one lab runs)`;

export async function adminCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      socket: { type: 'string' },
      lab: { type: 'string' },
      node: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  const [first, second] = positionals;
  const method = second !== undefined ? (first ?? '').toUpperCase() : 'GET';
  const path = second ?? first;
  if (values.help || !path || !path.startsWith('/') || (method !== 'GET' && method !== 'POST')) {
    process.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  let socket = values.socket ?? DEFAULT_ADMIN_SOCKET;
  if (values.node) {
    const rec = resolveLab(values.lab);
    if (!rec.plan.nodes.some((n) => n.name === values.node)) {
      process.stderr.write(`skein admin: no node ${values.node} in lab ${rec.id} (${rec.plan.nodes.map((n) => n.name).join(', ')})\n`);
      return 2;
    }
    socket = adminSocketOf(rec, values.node);
  }
  const r = await adminRequest(socket, method, path);
  process.stdout.write(r.body.endsWith('\n') ? r.body : `${r.body}\n`);
  return r.status >= 200 && r.status < 300 ? 0 : 1;
}
