/**
 * `skein status`: what the controller accepted and refused (resource, field, reason) and
 * which agents are connected with their ACK/NACK state.
 *
 *   skein status --controller H:P --token-file F --roots F [--agent-socket PATH ...] [--json]
 *   skein status [--lab ID] [--json]     the lab's controller (asked from inside a node netns,
 *                                         since only the lab's nodes reach it) and every node's agent
 *
 * Pods that are captured but not served (pending: refusing their mesh traffic until they can be,
 * e.g. certificate not issued yet, a port the agent needs held by the app; failed: not captured)
 * are known to the agents, not the controller: `skein status` asks each agent admin socket it is
 * given (default: this host's agent, when its socket exists) for /workloads and lists them with
 * pod, node, state and reason code.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pemBlocks } from '../identity/x509/pem.js';
import type { StatusResponse } from '../api/config-wire.js';
import { fetchControllerStatus } from '../controller/status-client.js';
import { adminGet, DEFAULT_ADMIN_SOCKET } from '../api/agent-admin.js';
import { messageOf } from '../errors.js';
import { adminSocketOf, CONFIG_PORT, meshPaths } from '../lab/mesh.js';
import { resolveLab } from '../lab/registry.js';
import { skeinCommand } from '../paths.js';
import { table } from './lab-format.js';

export async function statusCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      controller: { type: 'string' },
      'token-file': { type: 'string' },
      roots: { type: 'string' },
      lab: { type: 'string' },
      'agent-socket': { type: 'string', multiple: true, default: [] },
      json: { type: 'boolean', default: false },
    },
  });
  if (!values.controller) {
    const rec = resolveLab(values.lab);
    const node = rec.plan.nodes[0]!;
    const paths = meshPaths(rec);
    const agents = rec.plan.nodes.flatMap((n) => ['--agent-socket', adminSocketOf(rec, n.name)]);
    const args = ['--controller', `${rec.plan.underlayGateway}:${CONFIG_PORT}`, '--token-file', join(paths.tokensDir, node.name), '--roots', paths.rootsPem, ...agents, ...(values.json ? ['--json'] : [])];
    const r = spawnSync('ip', ['netns', 'exec', node.netns, ...skeinCommand(), 'status', ...args], { stdio: 'inherit' });
    return r.status ?? 1;
  }
  if (!values['token-file'] || !values.roots) {
    process.stderr.write('usage: skein status --controller HOST:PORT --token-file FILE --roots FILE [--agent-socket PATH ...] [--json]   (or, in a lab: skein status [--lab ID])\n');
    return 2;
  }
  const status = await fetchControllerStatus({
    address: values.controller,
    token: readFileSync(values['token-file'], 'utf8').trim(),
    rootsPem: pemBlocks(readFileSync(values.roots, 'utf8')),
    serverName: values.controller.replace(/:\d+$/, ''),
  });
  const sockets = values['agent-socket']!.length > 0 ? values['agent-socket']! : existsSync(DEFAULT_ADMIN_SOCKET) ? [DEFAULT_ADMIN_SOCKET] : [];
  const pods = await unservedPods(sockets);
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ ...status, unserved_pods: pods.rows, agents_unreachable: pods.unreachable }, null, 2)}\n`);
    return 0;
  }
  process.stdout.write(renderStatus(status, pods));
  return 0;
}

/** One pod an agent captures but does not serve (pending) or could not capture (failed). */
export interface UnservedPod {
  pod: string;
  node: string;
  state: string;
  /** Stable reason code (SKEIN_AGENT_IDENTITY_PENDING, SKEIN_CAPTURE_PORT_HELD, ...). */
  code: string;
  detail: string;
}

export interface UnservedPods {
  /** How many agents answered. */
  asked: number;
  rows: UnservedPod[];
  /** Admin sockets that did not answer, with why. */
  unreachable: { socket: string; error: string }[];
}

interface AgentWorkloadsAnswer {
  node: string;
  pods: { pod: string; state: string; code?: string; error?: string }[];
}

/** Asks each agent admin socket for /workloads and keeps the pods that are not served. */
export async function unservedPods(sockets: string[]): Promise<UnservedPods> {
  const out: UnservedPods = { asked: 0, rows: [], unreachable: [] };
  await Promise.all(
    sockets.map(async (socket) => {
      try {
        const w = await adminGet<AgentWorkloadsAnswer>(socket, '/workloads');
        out.asked++;
        for (const p of w.pods) {
          if (p.state === 'serving') continue;
          out.rows.push({ pod: p.pod, node: w.node, state: p.state, code: p.code ?? '-', detail: p.error ?? '-' });
        }
      } catch (err) {
        out.unreachable.push({ socket, error: messageOf(err) });
      }
    }),
  );
  out.rows.sort((a, b) => (a.node === b.node ? (a.pod < b.pod ? -1 : 1) : a.node < b.node ? -1 : 1));
  return out;
}

const TRAFFIC_KINDS = ['HTTPRoute/', 'GRPCRoute/', 'BackendTrafficPolicy/'];

/** The text `skein status` prints. */
export function renderStatus(status: StatusResponse, pods?: UnservedPods): string {
  const out = [`controller ${status.controller_id} (${status.leader ? 'leader' : 'follower'}), config version ${status.version}: ${status.objects} objects, ${status.resources} resources, ${status.refusals.length} refused`, ''];
  out.push(
    status.refusals.length
      ? table([['REFUSED', 'FROM', 'FIELD', 'REASON', 'CODE'], ...status.refusals.map((r) => [r.object, r.origin, r.field, r.reason, r.code])])
      : 'every resource accepted',
    '',
  );
  out.push(
    status.agents.length
      ? table([['AGENT', 'PEER', 'ACKED VERSION', 'ACKS', 'NACKS', 'LAST NACK'], ...status.agents.map((a) => [a.node, a.peer, a.acked_version, String(a.acks), String(a.nacks), a.last_nack || '-'])])
      : 'no agent connected',
  );
  // Accepted is "valid"; Enforced is "every agent that must apply it ACKed this version".
  const policies = status.policies ?? [];
  if (policies.length > 0) {
    out.push(
      '',
      table([
        ['POLICY', 'ACCEPTED', 'ENFORCED', 'ON', 'NOTE'],
        ...policies.map((p) => [
          p.object,
          'True',
          p.needed_on.length === 0 ? 'n/a (no pod)' : p.enforced ? 'True' : 'False',
          p.needed_on.length === 0 ? '-' : p.needed_on.map((n) => `${n}${p.enforced_on.includes(n) ? '' : ' (pending)'}`).join(', '),
          p.note || '-',
        ]),
      ]),
    );
  }
  // Routes and backend traffic policies, accepted or refused: one table, so an operator sees
  // every traffic object's state at once. ACKED BY says the agents took the config in.
  const traffic = status.traffic ?? [];
  const refusedTraffic = status.refusals.filter((r) => TRAFFIC_KINDS.some((k) => r.object.startsWith(k)));
  if (traffic.length + refusedTraffic.length > 0) {
    const rows = [
      ...traffic.map((x) => [x.object, 'accepted', x.agents === 0 ? 'no agent connected' : `acked by ${x.acked_on.length}/${x.agents} agents${x.acked_on.length ? ` (${x.acked_on.join(', ')})` : ''}`]),
      ...refusedTraffic.map((r) => [r.object, 'refused', `${r.field}: ${r.reason}`]),
    ].sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
    out.push('', table([['ROUTE / TRAFFIC POLICY', 'STATE', 'DETAIL'], ...rows]));
  }
  // Pods captured but refusing (pending) or not captured (failed), as their agents report them.
  if (pods) {
    out.push('');
    if (pods.rows.length > 0) out.push(table([['PENDING / REFUSING POD', 'NODE', 'STATE', 'REASON', 'DETAIL'], ...pods.rows.map((p) => [p.pod, p.node, p.state, p.code, p.detail])]));
    else if (pods.asked > 0) out.push(`every meshed pod served (${pods.asked} agent${pods.asked === 1 ? '' : 's'} asked)`);
    for (const u of pods.unreachable) out.push(`agent at ${u.socket} did not answer: ${u.error}`);
  }
  return `${out.join('\n')}\n`;
}
