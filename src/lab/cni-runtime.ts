/**
 * The lab's stand-in for a container runtime's CNI side (containerd's go-cni / libcni): it
 * reads a node's network configuration list from the node's CNI conf dir and runs its
 * plugins by the CNI protocol — each plugin binary found on CNI_PATH, executed with
 * CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH, its config on
 * stdin with the chain's cniVersion and name and the previous plugin's result as prevResult;
 * DEL in reverse order with the cached ADD result. The plugins run inside the lab node's
 * netns (`ip netns exec`), so the node side of a pod's veth lands there, as on a node.
 *
 * Not a runtime: no CRI, no sandbox container; the lab's pod is its netns and cgroup.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SkeinError } from '../errors.js';
import { LabCode } from './codes.js';

/** Where Debian's containernetworking-plugins are (and the upstream tarball's place). */
export const STANDARD_CNI_PLUGIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];

export interface CniNetworkList {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
}

export interface CniRuntimeCall {
  containerId: string;
  /** Path of the pod's netns (/run/netns/<name>). */
  netnsPath: string;
  ifName: string;
  /** CNI_ARGS as key/values (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID, ...). */
  args: Record<string, string>;
  /** Plugin binary directories (CNI_PATH). */
  binDirs: string[];
  /** The lab node's netns, where the plugins run. */
  nodeNetns: string;
  /** Where ADD results are kept for DEL (libcni's cache). */
  cacheDir: string;
  /** Per plugin call (ms); skein-cni's own timeout is below it. */
  timeoutMs?: number;
}

/** One plugin's refusal, as the CNI error result it printed. */
export class CniPluginError extends SkeinError {
  constructor(
    readonly plugin: string,
    readonly cniCode: number | undefined,
    message: string,
    readonly cniDetails: string | undefined,
  ) {
    super(LabCode.CniFailed, `CNI plugin ${plugin}: ${message}`, { plugin, cniCode, details: cniDetails });
  }
}

/** The first `*.conflist` of the conf dir in lexical order (what the kubelet's runtime picks). */
export function loadNetworkList(confDir: string): { file: string; list: CniNetworkList } {
  const files = existsSync(confDir)
    ? readdirSync(confDir)
        .filter((f) => f.endsWith('.conflist'))
        .sort()
    : [];
  if (files.length === 0) throw new SkeinError(LabCode.CniFailed, `no .conflist in ${confDir}`);
  const file = join(confDir, files[0]!);
  const list = JSON.parse(readFileSync(file, 'utf8')) as CniNetworkList;
  if (typeof list.cniVersion !== 'string' || typeof list.name !== 'string' || !Array.isArray(list.plugins)) {
    throw new SkeinError(LabCode.CniFailed, `${file} is not a CNI network configuration list`);
  }
  return { file, list };
}

function findPlugin(type: string, dirs: string[]): string {
  for (const d of dirs) {
    const p = join(d, type);
    if (existsSync(p)) return p;
  }
  throw new SkeinError(LabCode.CniFailed, `CNI plugin ${type} not found in ${dirs.join(':')} (Debian: apt-get install containernetworking-plugins)`);
}

function execPlugin(call: CniRuntimeCall, command: 'ADD' | 'DEL' | 'CHECK', type: string, config: Record<string, unknown>): Promise<{ code: number; stdout: string; stderr: string }> {
  const binary = findPlugin(type, call.binDirs);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    CNI_COMMAND: command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: call.netnsPath,
    CNI_IFNAME: call.ifName,
    CNI_ARGS: Object.entries(call.args)
      .map(([k, v]) => `${k}=${v}`)
      .join(';'),
    CNI_PATH: call.binDirs.join(':'),
  };
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', call.nodeNetns, binary], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      stdout += c;
    });
    child.stderr.on('data', (c) => {
      stderr += c;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), call.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 137 : 1), stdout, stderr });
    });
    child.stdin.end(JSON.stringify(config));
  });
}

function pluginFailure(type: string, r: { code: number; stdout: string; stderr: string }): CniPluginError {
  try {
    const e = JSON.parse(r.stdout) as { code?: number; msg?: string; details?: string };
    if (typeof e.msg === 'string') return new CniPluginError(type, e.code, e.msg, e.details);
  } catch {
    // not a CNI error result: report what it printed
  }
  return new CniPluginError(type, undefined, `exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 500)}`, undefined);
}

function resultFile(call: CniRuntimeCall, network: string): string {
  return join(call.cacheDir, `${network}-${call.containerId}-${call.ifName}.json`);
}

/** ADD through the chain; returns the final result (cached for DEL). */
export async function cniAdd(list: CniNetworkList, call: CniRuntimeCall): Promise<Record<string, unknown>> {
  let prev: Record<string, unknown> | undefined;
  for (const plugin of list.plugins) {
    const type = String(plugin.type);
    const config = { ...plugin, cniVersion: list.cniVersion, name: list.name, ...(prev ? { prevResult: prev } : {}) };
    const r = await execPlugin(call, 'ADD', type, config);
    if (r.code !== 0) throw pluginFailure(type, r);
    try {
      prev = JSON.parse(r.stdout) as Record<string, unknown>;
    } catch {
      throw new CniPluginError(type, undefined, `printed no JSON result: ${r.stdout.slice(0, 200)}`, undefined);
    }
  }
  mkdirSync(call.cacheDir, { recursive: true });
  writeFileSync(resultFile(call, list.name), JSON.stringify(prev ?? {}));
  return prev ?? {};
}

/**
 * DEL through the chain in reverse, every plugin even when one fails (the spec's rule: DEL
 * releases as much as it can); throws the first failure afterwards.
 */
export async function cniDel(list: CniNetworkList, call: CniRuntimeCall): Promise<void> {
  const file = resultFile(call, list.name);
  let prev: Record<string, unknown> | undefined;
  try {
    prev = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    prev = undefined;
  }
  let first: CniPluginError | undefined;
  for (const plugin of [...list.plugins].reverse()) {
    const type = String(plugin.type);
    const config = { ...plugin, cniVersion: list.cniVersion, name: list.name, ...(prev ? { prevResult: prev } : {}) };
    const r = await execPlugin(call, 'DEL', type, config);
    if (r.code !== 0) first ??= pluginFailure(type, r);
  }
  rmSync(file, { force: true });
  if (first) throw first;
}
