/**
 * `skein check` on a node: what the agent needs of the host before it can capture anything.
 * Every path is an option (with the real one as default), so tests can point a check at a
 * missing bpffs or BTF file without changing the machine.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as http from 'node:http';
import { release } from 'node:os';
import { DEFAULT_ADMIN_SOCKET } from '../../api/agent-admin.js';
import { bpffsHolding, findCgroup2Root, KERNEL_REQUIREMENTS, missingCapabilities, missingKernelFeatures, parseCapEff, parseKernelRelease, parseMountinfo } from '../../capture/host.js';
import { ComponentPort } from '../../config/ports.js';
import { type CheckResult, fail, guarded, pass } from './result.js';

export interface NodeCheckOptions {
  /** `uname -r` (default: this kernel's). */
  kernelRelease: string;
  btfPath: string;
  mountinfoPath: string;
  /** /proc/<pid>/status of the process whose capabilities count (this one). */
  procStatusPath: string;
  /** The agent's pin root; bpffs must hold it. */
  pinRoot: string;
  cniConfDir: string;
  /** Check the local agent: 'auto' = when its admin socket exists. */
  agent: 'auto' | 'yes' | 'no';
  adminSocket: string;
  /** host:port of the agent's readiness endpoint. */
  agentReady: string;
  timeoutMs: number;
}

export const DEFAULT_NODE_CHECK_OPTIONS: NodeCheckOptions = {
  kernelRelease: release(),
  btfPath: '/sys/kernel/btf/vmlinux',
  mountinfoPath: '/proc/self/mountinfo',
  procStatusPath: '/proc/self/status',
  pinRoot: '/sys/fs/bpf/skein',
  cniConfDir: '/etc/cni/net.d',
  agent: 'auto',
  adminSocket: DEFAULT_ADMIN_SOCKET,
  agentReady: `127.0.0.1:${ComponentPort.AgentReady}`,
  timeoutMs: 3000,
};

const newestNeed = KERNEL_REQUIREMENTS.reduce((a, b) => (b.since[0] > a.since[0] || (b.since[0] === a.since[0] && b.since[1] > a.since[1]) ? b : a)).since.join('.');

function kernel(o: NodeCheckOptions): CheckResult {
  const missing = missingKernelFeatures(parseKernelRelease(o.kernelRelease));
  if (missing.length) return fail('kernel', `Linux ${o.kernelRelease} lacks: ${missing.join('; ')}`, `run a kernel >= ${newestNeed}: skein's capture uses every hook listed`);
  return pass('kernel', `Linux ${o.kernelRelease} (>= ${newestNeed}: cgroup connect/sock_ops links, sk_lookup, netns cookies)`);
}

function btf(o: NodeCheckOptions): CheckResult {
  if (existsSync(o.btfPath) && statSync(o.btfPath).size > 0) return pass('btf', `kernel BTF at ${o.btfPath}`);
  return fail(
    'btf',
    `no kernel BTF at ${o.btfPath}`,
    'skein\'s BPF objects are built and loaded against the kernel\'s BTF: use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the default of current Debian, Ubuntu, RHEL, COS and Bottlerocket kernels)',
  );
}

function cgroup2(o: NodeCheckOptions): CheckResult {
  const root = findCgroup2Root(parseMountinfo(readFileSync(o.mountinfoPath, 'utf8')));
  if (root) return pass('cgroup2', `cgroup v2 mounted at ${root}`);
  return fail('cgroup2', `no cgroup2 mount in ${o.mountinfoPath}`, 'mount the unified hierarchy (mount -t cgroup2 none /sys/fs/cgroup), or boot with systemd.unified_cgroup_hierarchy=1: the capture hooks attach to the cgroup v2 root');
}

function bpffs(o: NodeCheckOptions): CheckResult {
  const at = bpffsHolding(parseMountinfo(readFileSync(o.mountinfoPath, 'utf8')), o.pinRoot);
  if (at) return pass('bpffs', `bpffs at ${at} holds the pin root ${o.pinRoot}`);
  return fail(
    'bpffs',
    `no bpf filesystem holds the pin root ${o.pinRoot}`,
    'mount -t bpf bpf /sys/fs/bpf (persist it in /etc/fstab or a systemd mount unit); without it skein\'s programs and their pins do not survive an agent restart',
  );
}

function capabilities(o: NodeCheckOptions): CheckResult {
  const missing = missingCapabilities(parseCapEff(readFileSync(o.procStatusPath, 'utf8')));
  if (!missing.length) return pass('capabilities', 'CAP_BPF (or CAP_SYS_ADMIN), CAP_NET_ADMIN and CAP_SYS_ADMIN are effective');
  return fail('capabilities', `missing ${missing.map((c) => `CAP_${c}`).join(', ')}`, 'run skein check as root (sudo), and the agent privileged (the DaemonSet of skein install is)');
}

function cniConfDir(o: NodeCheckOptions): CheckResult {
  if (existsSync(o.cniConfDir) && statSync(o.cniConfDir).isDirectory()) return pass('cni-conf-dir', `CNI configuration folder ${o.cniConfDir}`);
  return fail(
    'cni-conf-dir',
    `no CNI configuration folder at ${o.cniConfDir}`,
    'skein-cni chains after the node\'s network plugin: install the cluster\'s CNI plugin first, or give its folder (--cni-conf-dir; kubelet/containerd setting conf_dir)',
  );
}

function getUnix(socketPath: string, path: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

async function agentChecks(o: NodeCheckOptions): Promise<CheckResult[]> {
  if (o.agent === 'no' || (o.agent === 'auto' && !existsSync(o.adminSocket))) return [];
  const admin = await guarded('agent-admin', `is the agent running on this node? (skein agent --admin-socket ${o.adminSocket}; kubectl -n skein-system get pods -l app.kubernetes.io/name=skein-agent -o wide)`, async () => {
    const status = await getUnix(o.adminSocket, '/', o.timeoutMs);
    return status === 200 ? pass('agent-admin', `agent admin API answers on ${o.adminSocket}`) : fail('agent-admin', `agent admin API on ${o.adminSocket} answered ${status}`, 'see the agent\'s log');
  });
  const ready = await guarded('agent-ready', `the agent's readiness endpoint (--ready, default ${DEFAULT_NODE_CHECK_OPTIONS.agentReady}) does not answer: is the agent running?`, async () => {
    const res = await fetch(`http://${o.agentReady}/healthz/ready`, { signal: AbortSignal.timeout(o.timeoutMs) });
    const body = await res.text();
    if (res.status === 200) return pass('agent-ready', `agent ready at http://${o.agentReady}/healthz/ready`);
    return fail('agent-ready', `agent not ready (${res.status} ${body.trim()})`, 'capture, config or pod enrolment is pending: skein admin GET /capture and GET /workloads, and the agent\'s log, say which');
  });
  return [admin, ready];
}

export async function nodeChecks(opts: Partial<NodeCheckOptions> = {}): Promise<CheckResult[]> {
  const o = { ...DEFAULT_NODE_CHECK_OPTIONS, ...opts };
  const readHint = (what: string) => `cannot read ${what}: is this Linux with /proc mounted?`;
  return [
    await guarded('kernel', 'cannot read the kernel release', () => kernel(o)),
    await guarded('btf', readHint(o.btfPath), () => btf(o)),
    await guarded('cgroup2', readHint(o.mountinfoPath), () => cgroup2(o)),
    await guarded('bpffs', readHint(o.mountinfoPath), () => bpffs(o)),
    await guarded('capabilities', readHint(o.procStatusPath), () => capabilities(o)),
    await guarded('cni-conf-dir', `cannot read ${o.cniConfDir}`, () => cniConfDir(o)),
    ...(await agentChecks(o)),
  ];
}
