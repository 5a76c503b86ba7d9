/** `skein lab ...`: a Linux machine as a small cluster. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { labDown, labExec, labGc, labStatus, labUp } from '../lab/lab.js';
import { annotateNamespace, applyObjects, deleteObjects, labelNamespace, scaleDeployment } from '../lab/mutate.js';
import { resolveLab } from '../lab/registry.js';
import { runForwardFd } from '../lab/prometheus.js';
import { upgradeAgent } from '../lab/mesh.js';
import { repoRoot } from '../paths.js';
import { createLogger } from '../telemetry/log.js';
import { runDemo } from './demo.js';
import { formatStatus } from './lab-format.js';

export function defaultScenario(): string {
  return join(repoRoot(), 'deploy', 'local', 'demo.yaml');
}

export async function labCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const dashdash = rest.indexOf('--');
  const own = dashdash >= 0 ? rest.slice(0, dashdash) : rest;
  const { values, positionals } = parseArgs({
    args: own,
    allowPositionals: true,
    options: {
      lab: { type: 'string' },
      json: { type: 'boolean', default: false },
      all: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      'owner-pid': { type: 'string' },
      'no-mesh': { type: 'boolean', default: false },
      prometheus: { type: 'boolean', default: false },
      'prometheus-port': { type: 'string' },
      to: { type: 'string' },
      grace: { type: 'string' },
      filename: { type: 'string', short: 'f' },
      'agent-restart-backoff': { type: 'string' },
      timeout: { type: 'string' },
    },
  });
  const log = createLogger({ base: { component: 'lab' }, level: process.env.SKEIN_LOG_LEVEL ?? 'warn' });
  const progress = (line: string) => process.stderr.write(`${line}\n`);
  switch (sub) {
    case 'up': {
      const rec = await labUp({
        scenarioFile: positionals[0] ?? defaultScenario(),
        ...(values['owner-pid'] ? { ownerPid: Number(values['owner-pid']) } : {}),
        mesh: !values['no-mesh'],
        ...(values['agent-restart-backoff'] ? { agentRestartBackoffMs: Number(values['agent-restart-backoff']) * 1000 } : {}),
        ...(values.prometheus ? { prometheus: { port: Number(values['prometheus-port'] ?? 0) } } : {}),
        log,
        progress,
      });
      const status = labStatus(rec);
      process.stdout.write(values.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
      return 0;
    }
    case 'down': {
      const rec = resolveLab(values.lab);
      await labDown(rec);
      progress(`lab ${rec.id}: down`);
      return 0;
    }
    case 'status': {
      const status = labStatus(resolveLab(values.lab));
      process.stdout.write(values.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
      return 0;
    }
    case 'exec': {
      if (dashdash < 0 || positionals.length !== 1) {
        process.stderr.write('usage: skein lab exec NAMESPACE/POD -- COMMAND [ARGS...]\n');
        return 2;
      }
      const cmd = rest.slice(dashdash + 1);
      if (cmd.length === 0) {
        process.stderr.write('skein lab exec: no command after --\n');
        return 2;
      }
      return labExec(resolveLab(values.lab), positionals[0]!, cmd);
    }
    case 'gc': {
      const r = await labGc({ all: values.all });
      progress(`lab gc: removed ${r.labs.length} lab(s), ${r.netns.length} stray netns, ${r.cgroups.length} stray cgroup tree(s), ${r.pins.length} stray pin folder(s)`);
      return 0;
    }
    case 'label':
    case 'annotate': {
      // skein lab label|annotate namespace NAME key=value|key- ...
      if (positionals[0] !== 'namespace' || positionals.length < 3) {
        process.stderr.write(`usage: skein lab ${sub} namespace NAME key=value|key- [...]\n`);
        return 2;
      }
      const change = sub === 'label' ? labelNamespace : annotateNamespace;
      const result = await change(resolveLab(values.lab), positionals[1]!, positionals.slice(2));
      process.stdout.write(`namespace/${positionals[1]} ${sub === 'label' ? 'labels' : 'annotations'}: ${JSON.stringify(result)}\n`);
      return 0;
    }
    case 'apply':
    case 'delete': {
      // skein lab apply|delete -f FILE (as kubectl): objects into / out of the controller's folder
      if (!values.filename) {
        process.stderr.write(`usage: skein lab ${sub} -f FILE\n`);
        return 2;
      }
      const text = readFileSync(values.filename, 'utf8');
      const rec = resolveLab(values.lab);
      const names = sub === 'apply' ? applyObjects(rec, values.filename, text) : deleteObjects(rec, values.filename, text);
      for (const n of names) process.stdout.write(`${n} ${sub === 'apply' ? 'applied' : 'deleted'}\n`);
      return 0;
    }
    case 'scale': {
      // skein lab scale NAMESPACE/DEPLOYMENT N
      const n = Number(positionals[1]);
      if (positionals.length !== 2 || !positionals[0]!.includes('/') || !Number.isInteger(n)) {
        process.stderr.write('usage: skein lab scale NAMESPACE/DEPLOYMENT REPLICAS\n');
        return 2;
      }
      const { added, removed } = await scaleDeployment(resolveLab(values.lab), positionals[0]!, n, { graceMs: Number(values.grace ?? 1000) });
      const names = (pods: { name: string }[]) => pods.map((p) => p.name).join(', ') || 'none';
      process.stdout.write(`deployment/${positionals[0]} scaled to ${n} (added: ${names(added)}; removed: ${names(removed)})\n`);
      return 0;
    }
    case 'upgrade-agent': {
      // skein lab upgrade-agent NODE: the DaemonSet's rolling update, on one node
      if (positionals.length !== 1) {
        process.stderr.write('usage: skein lab upgrade-agent NODE\n');
        return 2;
      }
      const r = await upgradeAgent(resolveLab(values.lab), positionals[0]!, values.timeout ? Number(values.timeout) * 1000 : undefined);
      process.stdout.write(`agent of ${positionals[0]} upgraded: ${r.previousPid} -> ${r.agentPid} in ${(r.ms / 1000).toFixed(1)}s (handover, then the old agent drained and exited)\n`);
      return 0;
    }
    case 'forward-fd':
      // Internal: the lab's host port forward (see lab/prometheus.ts), started by `lab up`.
      return runForwardFd(values.to ?? '');
    case 'demo':
      return runDemo({ scenarioFile: positionals[0] ?? defaultScenario(), keep: values.keep, log, progress });
    default:
      process.stderr.write('usage: skein lab up|down|status|exec|gc|demo|upgrade-agent (see skein help)\n');
      return 2;
  }
}
