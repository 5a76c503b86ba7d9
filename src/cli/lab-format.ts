/** Human-readable lab status. */
import type { LabStatus } from '../lab/lab.js';

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export function formatStatus(s: LabStatus): string {
  const out: string[] = [`lab ${s.id} (${s.status}) from ${s.scenario}`, `state: ${s.stateDir}`, `logs:  ${s.logDir}`];
  if (s.graph) out.push(`graph: ${s.graph}`);
  if (s.prometheus) out.push(`prometheus: ${s.prometheus}`);
  out.push('');
  out.push(table([['NODE', 'NETNS', 'ADDRESS', 'POD CIDR'], ...s.nodes.map((n) => [n.name, n.netns, n.address, n.podCIDR])]), '');
  out.push(
    table([
      ['NAMESPACE', 'LABELS'],
      ...s.namespaces.map((n) => [n.name, Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-']),
    ]),
    '',
  );
  out.push(
    table([
      ['SERVICE', 'VIP', 'PORTS'],
      ...s.services.map((v) => [`${v.namespace}/${v.name}`, v.vip, v.ports.map((p) => `${p.port}->${p.targetPort}${p.appProtocol ? `/${p.appProtocol}` : ''}`).join(',')]),
    ]),
    '',
  );
  out.push(
    table([
      ['POD', 'NODE', 'IP', 'SA', 'STATE'],
      ...s.pods.map((p) => [`${p.namespace}/${p.name}`, p.node, p.ip, p.serviceAccount, p.running ? `running (pid ${p.pid})` : 'stopped']),
    ]),
  );
  if (s.agents.length) {
    const exit = (a: LabStatus['agents'][number]) => (a.lastExit ? `${a.lastExit.signal ?? `code ${a.lastExit.code}`} at ${a.lastExit.at}` : '-');
    out.push(
      '',
      table([
        ['AGENT', 'STATE', 'PID', 'RESTARTS', 'UPGRADES', 'LAST EXIT'],
        ...s.agents.map((a) => [a.node, a.state === 'backoff' && a.nextStartAt ? `backoff (restart at ${a.nextStartAt})` : a.state, a.running ? String(a.pid) : '-', String(a.restarts), a.failedUpgrades ? `${a.upgrades} (${a.failedUpgrades} failed)` : String(a.upgrades), exit(a)]),
      ]),
    );
  }
  const others = s.processes.filter((p) => p.kind !== 'pod');
  if (others.length) {
    out.push('', table([['COMPONENT', 'NAME', 'STATE', 'LOG'], ...others.map((p) => [p.kind, p.name, p.running ? `running (pid ${p.pid})` : 'stopped', p.log])]));
  }
  return `${out.join('\n')}\n`;
}
