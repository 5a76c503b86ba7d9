/**
 * `skein status`: what the controller accepted and refused (resource, field, reason) and
 * which agents are connected with their ACK/NACK state.
 *
 *   skein status --controller H:P --token-file F --roots F [--json]
 *   skein status [--lab ID] [--json]     the lab's controller (asked from inside a node netns,
 *                                         since only the lab's nodes reach it)
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pemBlocks } from '../identity/x509/pem.js';
import type { StatusResponse } from '../api/config-wire.js';
import { fetchControllerStatus } from '../controller/status-client.js';
import { CONFIG_PORT, meshPaths } from '../lab/mesh.js';
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
      json: { type: 'boolean', default: false },
    },
  });
  if (!values.controller) {
    const rec = resolveLab(values.lab);
    const node = rec.plan.nodes[0]!;
    const paths = meshPaths(rec);
    const args = ['--controller', `${rec.plan.underlayGateway}:${CONFIG_PORT}`, '--token-file', join(paths.tokensDir, node.name), '--roots', paths.rootsPem, ...(values.json ? ['--json'] : [])];
    const r = spawnSync('ip', ['netns', 'exec', node.netns, ...skeinCommand(), 'status', ...args], { stdio: 'inherit' });
    return r.status ?? 1;
  }
  if (!values['token-file'] || !values.roots) {
    process.stderr.write('usage: skein status --controller HOST:PORT --token-file FILE --roots FILE [--json]   (or, in a lab: skein status [--lab ID])\n');
    return 2;
  }
  const status = await fetchControllerStatus({
    address: values.controller,
    token: readFileSync(values['token-file'], 'utf8').trim(),
    rootsPem: pemBlocks(readFileSync(values.roots, 'utf8')),
    serverName: values.controller.replace(/:\d+$/, ''),
  });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
    return 0;
  }
  process.stdout.write(renderStatus(status));
  return 0;
}

const TRAFFIC_KINDS = ['HTTPRoute/', 'GRPCRoute/', 'BackendTrafficPolicy/'];

/** The text `skein status` prints. */
export function renderStatus(status: StatusResponse): string {
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
  return `${out.join('\n')}\n`;
}
