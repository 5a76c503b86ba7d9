/**
 * `skein check`: is this node (and, given a controller, this cluster) ready for skein? One
 * line per check, a hint under each failure, exit 1 on any failure (2 for bad flags);
 * `--output json` for scripts.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { KubeConfigSource } from '../../controller/kube/kube-config.js';
import { messageOf } from '../../errors.js';
import { pemBlocks } from '../../identity/x509/pem.js';
import { InstallCode } from '../codes.js';
import { clusterChecks, DEFAULT_MIN_CERT_VALIDITY_MS, DEFAULT_MIN_ROOT_VALIDITY_MS } from './cluster-checks.js';
import { DEFAULT_NODE_CHECK_OPTIONS as D, type NodeCheckOptions, nodeChecks } from './node-checks.js';
import type { CheckResult } from './result.js';

export const CHECK_USAGE = `usage: skein check [options]

On this node (skip with --skip-node): kernel version, BTF, cgroup v2, bpffs at the pin root,
capabilities, the CNI configuration folder, and the local agent (admin socket, readiness)
when its socket exists or --agent is given. Against the cluster: with --controller, the
controller answers, agents are connected and none rejects its config, the controller's
certificate and the trust bundle are valid; with --kube (or --kube-server), skein's CRDs.

node:
  --kernel-release R   judge this release instead of the running kernel's
  --btf PATH           kernel BTF (default ${D.btfPath})
  --mountinfo PATH     mount table (default ${D.mountinfoPath})
  --proc-status PATH   capabilities of (default ${D.procStatusPath})
  --pin-root DIR       the agent's pin root, on bpffs (default ${D.pinRoot})
  --cni-conf-dir DIR   CNI configuration folder (default ${D.cniConfDir})
  --agent / --no-agent check the local agent / never (default: when its admin socket exists)
  --admin-socket PATH  the agent's admin socket (default ${D.adminSocket})
  --agent-ready H:P    the agent's readiness endpoint (default ${D.agentReady})
  --skip-node          only the cluster checks

cluster:
  --controller H:P --token-file FILE --roots FILE   the controller's config port, a credential it
                       accepts, and the mesh trust bundle (as skein status)
  --expect-agents N    agents that must be connected (default 1)
  --cert-min-hours H   the controller's certificate must stay valid this long (default ${DEFAULT_MIN_CERT_VALIDITY_MS / 3_600_000})
  --root-min-days D    each root must stay valid this long (default ${DEFAULT_MIN_ROOT_VALIDITY_MS / 86_400_000})
  --kube               ask the API server for the CRDs: credentials from --kubeconfig, else
                       $KUBECONFIG, else the in-cluster service account, else ~/.kube/config
  --kubeconfig FILE    --kube-context NAME
  --kube-server URL --kube-token-file FILE --kube-ca-file FILE   or this API server

  --output text|json   (default text)
`;

const OPTIONS = {
  'kernel-release': { type: 'string' },
  btf: { type: 'string' },
  mountinfo: { type: 'string' },
  'proc-status': { type: 'string' },
  'pin-root': { type: 'string' },
  'cni-conf-dir': { type: 'string' },
  agent: { type: 'boolean' },
  'no-agent': { type: 'boolean' },
  'admin-socket': { type: 'string' },
  'agent-ready': { type: 'string' },
  'skip-node': { type: 'boolean' },
  controller: { type: 'string' },
  'token-file': { type: 'string' },
  roots: { type: 'string' },
  'expect-agents': { type: 'string' },
  'cert-min-hours': { type: 'string' },
  'root-min-days': { type: 'string' },
  kube: { type: 'boolean' },
  kubeconfig: { type: 'string' },
  'kube-context': { type: 'string' },
  'kube-server': { type: 'string' },
  'kube-token-file': { type: 'string' },
  'kube-ca-file': { type: 'string' },
  output: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

class UsageError extends Error {}

function positive(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!(n >= 0) || v.trim() === '') throw new UsageError(`${flag} must be a number >= 0, got "${v}"`);
  return n;
}

export function formatChecks(results: CheckResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${r.ok ? '✔' : '✖'} ${r.name}: ${r.detail}`);
    if (!r.ok && r.hint) lines.push(`    hint: ${r.hint}`);
  }
  const failed = results.filter((r) => !r.ok).length;
  lines.push(failed ? `${failed} of ${results.length} checks failed` : `all ${results.length} checks passed`);
  return `${lines.join('\n')}\n`;
}

export async function checkCommand(argv: string[]): Promise<number> {
  let v: { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'string' ? string : boolean };
  let node: Partial<NodeCheckOptions>;
  let kube: KubeConfigSource | undefined;
  let expectAgents: number | undefined;
  let certHours: number | undefined;
  let rootDays: number | undefined;
  try {
    ({ values: v } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }));
    if (v.help) {
      process.stdout.write(CHECK_USAGE);
      return 0;
    }
    if (v.output !== undefined && v.output !== 'text' && v.output !== 'json') throw new UsageError(`--output must be text or json, got "${v.output}"`);
    if (v.agent && v['no-agent']) throw new UsageError('give one of --agent and --no-agent');
    if (v.controller && (!v['token-file'] || !v.roots)) throw new UsageError('--controller needs --token-file and --roots');
    if (v['skip-node'] && !v.controller && !v.kube && !v['kube-server'] && !v.kubeconfig) throw new UsageError('--skip-node leaves nothing to check: give --controller or --kube');
    expectAgents = positive(v['expect-agents'], '--expect-agents');
    certHours = positive(v['cert-min-hours'], '--cert-min-hours');
    rootDays = positive(v['root-min-days'], '--root-min-days');
    node = {
      ...(v['kernel-release'] ? { kernelRelease: v['kernel-release'] } : {}),
      ...(v.btf ? { btfPath: v.btf } : {}),
      ...(v.mountinfo ? { mountinfoPath: v.mountinfo } : {}),
      ...(v['proc-status'] ? { procStatusPath: v['proc-status'] } : {}),
      ...(v['pin-root'] ? { pinRoot: v['pin-root'] } : {}),
      ...(v['cni-conf-dir'] ? { cniConfDir: v['cni-conf-dir'] } : {}),
      ...(v['admin-socket'] ? { adminSocket: v['admin-socket'] } : {}),
      ...(v['agent-ready'] ? { agentReady: v['agent-ready'] } : {}),
      agent: v.agent ? 'yes' : v['no-agent'] ? 'no' : 'auto',
    };
    if (v.kube || v['kube-server'] || v.kubeconfig) {
      kube = {
        ...(v.kubeconfig ? { kubeconfig: v.kubeconfig } : {}),
        ...(v['kube-context'] ? { context: v['kube-context'] } : {}),
        ...(v['kube-server'] ? { server: v['kube-server'] } : {}),
        ...(v['kube-token-file'] ? { tokenFile: v['kube-token-file'] } : {}),
        ...(v['kube-ca-file'] ? { caFile: v['kube-ca-file'] } : {}),
      };
    }
  } catch (err) {
    process.stderr.write(`skein check: ${messageOf(err)}\n${CHECK_USAGE}`);
    return 2;
  }
  const results: CheckResult[] = [];
  if (!v['skip-node']) results.push(...(await nodeChecks(node)));
  let controller: Parameters<typeof clusterChecks>[0]['controller'];
  if (v.controller) {
    try {
      controller = {
        address: v.controller,
        token: readFileSync(v['token-file'] as string, 'utf8').trim(),
        rootsPem: pemBlocks(readFileSync(v.roots as string, 'utf8')),
        serverName: v.controller.replace(/:\d+$/, '').replace(/^\[|\]$/g, ''),
      };
    } catch (err) {
      results.push({ name: 'controller', ok: false, detail: `cannot read the credential: ${messageOf(err)}`, hint: 'give readable --token-file and --roots files' });
    }
  }
  results.push(
    ...(await clusterChecks({
      ...(controller ? { controller } : {}),
      ...(kube ? { kube } : {}),
      ...(expectAgents !== undefined ? { expectAgents } : {}),
      ...(certHours !== undefined ? { minCertValidityMs: certHours * 3_600_000 } : {}),
      ...(rootDays !== undefined ? { minRootValidityMs: rootDays * 86_400_000 } : {}),
    })),
  );
  const ok = results.every((r) => r.ok);
  if (v.output === 'json') process.stdout.write(`${JSON.stringify({ ok, ...(ok ? {} : { code: InstallCode.CheckFailed }), checks: results }, null, 2)}\n`);
  else {
    process.stdout.write(formatChecks(results));
    if (!ok) process.stderr.write(`skein check: ${InstallCode.CheckFailed}\n`);
  }
  return ok ? 0 : 1;
}
