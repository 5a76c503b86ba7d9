/**
 * `skein authz check --from NS/POD --to NS/POD:PORT [--method M --path P --header K=V ...]`:
 * which AuthorizationPolicies apply to the destination, which rule decides and the decision,
 * computed the way the mesh does: the folder the controller reads (`--folder DIR`, or a lab's
 * with `--lab ID`) goes through the controller's own translation and index, and the decision
 * through the agent's policy engine (policy/authorization.ts). Without --method/--path/--header
 * the check is for a TCP connection (L4).
 */
import { parseArgs } from 'node:util';
import type { Workload } from '../config/model.js';
import type { AuthorizationPolicy } from '../config/policy-model.js';
import { FolderSource } from '../controller/folder-source.js';
import { MeshIndex } from '../controller/mesh-index.js';
import { ObjectStore } from '../controller/object-store.js';
import { resolveLab } from '../lab/registry.js';
import { type AuthzRequest, policiesFor, WorkloadAuthorizer } from '../policy/authorization.js';

const USAGE = `usage: skein authz check --from NS/POD --to NS/POD:PORT [--method M] [--path P] [--header K=V]...
                         [--folder DIR | --lab ID] [--root-namespace NS] [--json]
  Which policies apply to the destination pod, which rule decides, and the decision, from the
  controller's model of the folder (a lab's state folder with --lab). With no HTTP option the
  check is for a TCP connection. Exit 0 when allowed, 1 when denied.`;

export async function authzCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      method: { type: 'string' },
      path: { type: 'string' },
      header: { type: 'string', multiple: true },
      folder: { type: 'string' },
      lab: { type: 'string' },
      'root-namespace': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  const to = /^([^/]+)\/([^:]+):(\d+)$/.exec(values.to ?? '');
  if (sub !== 'check' || values.help || !values.from?.includes('/') || !to) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const dir = values.folder ?? resolveLab(values.lab).stateDir;
  const model = await modelOf(dir, values['root-namespace']);
  const find = (ref: string): Workload => {
    const [ns, name] = ref.split('/');
    const w = model.workloads.find((x) => x.namespace === ns && x.name === name);
    if (!w) throw new Error(`no pod ${ref} in ${dir}`);
    return w;
  };
  const src = find(values.from);
  const dst = find(`${to[1]}/${to[2]}`);
  const port = Number(to[3]);
  const headers: Record<string, string> = {};
  for (const h of values.header ?? []) {
    const i = h.indexOf('=');
    if (i <= 0) throw new Error(`--header wants K=V, got ${h}`);
    headers[h.slice(0, i).toLowerCase()] = h.slice(i + 1);
  }
  const http = values.method !== undefined || values.path !== undefined || values.header !== undefined;
  const req: AuthzRequest = { source: src.identity, port };
  if (src.ips[0]) req.sourceIp = src.ips[0];
  if (http) req.http = { method: values.method ?? 'GET', path: values.path ?? '/', authority: headers.host ?? `${dst.name}.${dst.namespace}`, headers };
  const applying = policiesFor(dst, model.policies);
  const d = new WorkloadAuthorizer(applying).evaluate(req);
  const out = {
    from: `${src.namespace}/${src.name}`,
    principal: src.identity,
    to: `${dst.namespace}/${dst.name}:${port}`,
    kind: http ? 'http' : 'tcp',
    policies: applying.map((p) => ({ name: `${p.namespace}/${p.name}`, action: p.action, ...(p.dryRun ? { dryRun: true } : {}), ...(p.meshWide ? { meshWide: true } : {}) })),
    decision: d.allow ? 'ALLOW' : 'DENY',
    reason: d.reason,
    ...(d.decidedBy ? { decidedBy: d.decidedBy } : {}),
    audits: d.audits,
  };
  if (values.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  else {
    process.stdout.write(`${out.from} (${out.principal}) -> ${out.to} ${out.kind}${http ? ` ${req.http?.method} ${req.http?.path}` : ''}\n`);
    process.stdout.write(`policies: ${out.policies.length ? out.policies.map((p) => `${p.name} (${p.action}${p.dryRun ? ', dry run' : ''})`).join(', ') : 'none'}\n`);
    for (const a of d.audits) process.stdout.write(`${a.dryRun ? 'dry run' : 'audit'}: ${a.policy} rule ${a.rule}\n`);
    process.stdout.write(`${out.decision}: ${out.reason}\n`);
  }
  return d.allow ? 0 : 1;
}

/** The controller's model of a folder: its translation, validation and index, in this process. */
async function modelOf(dir: string, rootNamespace: string | undefined): Promise<{ workloads: Workload[]; policies: AuthorizationPolicy[] }> {
  const store = new ObjectStore();
  const index = new MeshIndex(store, rootNamespace ? { rootNamespace } : {});
  const folder = new FolderSource(store, { dir, rescanMs: 0 });
  await folder.scan();
  await index.settled();
  index.close();
  const workloads: Workload[] = [];
  const policies: AuthorizationPolicy[] = [];
  for (const e of index.entries().values()) {
    if (e.type === 'workload') workloads.push(JSON.parse(e.json) as Workload);
    if (e.type === 'authorization') policies.push(JSON.parse(e.json) as AuthorizationPolicy);
  }
  return { workloads, policies };
}
