/**
 * The CNI calls skein-cni forwards to the agent: parsed and checked here, before anything
 * is decided (pure: no I/O). skein-cni (cni/skein-cni.c) sends one JSON object per call:
 *
 *   { command, containerId, netns, ifName, args, path, stdin }
 *
 * — the CNI_* variables the runtime gave the plugin and the network configuration it read on
 * stdin — and prints the answer: `<exit code>\n<stdout>`. What is malformed is refused with
 * a CNI error result (spec: code, msg, details) and the skein code in `details`.
 *
 * Results follow the CNI spec 1.0 (and 0.4/0.3, whose `ips` have the same shape): a chained
 * plugin that changes nothing prints its prevResult.
 */
import { isIP } from 'node:net';
import { SkeinError } from '../errors.js';
import { AgentCode } from './codes.js';

/** CNI versions skein-cni speaks (the result shape it passes through is the same in each). */
export const SUPPORTED_CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;

/** The CNI spec's well-known error codes (1-99 are the spec's). */
export const CniErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
} as const;

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

export interface CniPodRef {
  namespace: string;
  name: string;
  /** K8S_POD_UID, when the runtime passes it (containerd and CRI-O do). */
  uid?: string;
}

export interface CniCall {
  command: CniCommand;
  containerId: string;
  /** CNI_NETNS: the new pod sandbox's network namespace (absent on a DEL after it is gone). */
  netns: string | undefined;
  ifName: string;
  args: Record<string, string>;
  pod: CniPodRef | undefined;
  cniVersion: string;
  /** The network's name (the conflist's). */
  network: string;
  /** The result of the plugins before this one (ADD, CHECK); printed back unchanged on ADD. */
  prevResult: Record<string, unknown> | undefined;
  /** The pod's IPs in prevResult (address without prefix length). */
  prevIps: string[];
}

/** A refusal carried back to the runtime as a CNI error result. */
export class CniError extends SkeinError {
  constructor(
    readonly cniCode: number,
    code: string,
    message: string,
    details?: Record<string, unknown>,
  ) {
    super(code, message, details);
  }
}

export interface CniAnswer {
  /** skein-cni's exit code. */
  exitCode: number;
  stdout: string;
}

/** The answer skein-cni prints for an error: the spec's error result, exit 1. */
export function errorAnswer(cniVersion: string, err: CniError): CniAnswer {
  return {
    exitCode: 1,
    stdout: `${JSON.stringify({ cniVersion, code: err.cniCode, msg: err.message, details: `${err.code}${err.details ? ` ${JSON.stringify(err.details)}` : ''}` })}\n`,
  };
}

/** The VERSION answer. */
export function versionAnswer(): CniAnswer {
  return { exitCode: 0, stdout: `${JSON.stringify({ cniVersion: '1.0.0', supportedVersions: SUPPORTED_CNI_VERSIONS })}\n` };
}

/** ADD's answer when skein changes nothing on the interface: prevResult as it came. */
export function passThroughAnswer(call: CniCall): CniAnswer {
  return { exitCode: 0, stdout: `${JSON.stringify({ ...call.prevResult, cniVersion: call.cniVersion })}\n` };
}

/** CNI_ARGS: `K=V;K=V` (the runtime's; unknown keys are allowed with IgnoreUnknown). */
export function parseCniArgs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (s === '') return out;
  for (const part of s.split(';')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw bad(CniErrorCode.InvalidEnvironment, `CNI_ARGS entry ${JSON.stringify(part)} is not KEY=VALUE`, 'CNI_ARGS');
    out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

function bad(cniCode: number, message: string, field: string): CniError {
  return new CniError(cniCode, AgentCode.CniBadRequest, message, { field });
}

function optString(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw bad(CniErrorCode.InvalidEnvironment, `${key} must be a string`, key);
  return v;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** Kubernetes object names (DNS-1123 subdomain) and namespaces (label). */
const K8S_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** The IPs of a CNI result (`ips[].address`, CIDR notation), checked. */
export function resultIps(result: Record<string, unknown>): string[] {
  const ips = result.ips;
  if (ips === undefined) return [];
  if (!Array.isArray(ips)) throw bad(CniErrorCode.InvalidConfig, 'prevResult.ips must be a list', 'prevResult.ips');
  return ips.map((entry, i) => {
    const addr = (entry as { address?: unknown } | null)?.address;
    const ip = typeof addr === 'string' ? addr.split('/')[0]! : '';
    if (typeof addr !== 'string' || !/\/\d{1,3}$/.test(addr) || isIP(ip) === 0) {
      throw bad(CniErrorCode.InvalidConfig, `prevResult.ips[${i}].address must be an IP in CIDR notation, got ${JSON.stringify(addr)}`, `prevResult.ips[${i}].address`);
    }
    return ip;
  });
}

/**
 * Parses one forwarded call. Throws CniError (with the CNI code the runtime expects and
 * SKEIN_AGENT_CNI_BAD_REQUEST) for anything malformed; `cniVersion` of the error is the
 * config's when it could be read.
 */
export function parseCniCall(raw: string): CniCall {
  let o: unknown;
  try {
    o = JSON.parse(raw);
  } catch {
    throw bad(CniErrorCode.DecodeFailure, 'the request from skein-cni is not JSON', 'request');
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw bad(CniErrorCode.DecodeFailure, 'the request from skein-cni is not a JSON object', 'request');
  const req = o as Record<string, unknown>;
  const command = optString(req, 'command');
  if (command !== 'ADD' && command !== 'DEL' && command !== 'CHECK' && command !== 'VERSION') {
    throw bad(CniErrorCode.InvalidEnvironment, `CNI_COMMAND must be ADD, DEL, CHECK or VERSION, got ${JSON.stringify(command)}`, 'CNI_COMMAND');
  }
  const stdin = optString(req, 'stdin') ?? '';
  let config: Record<string, unknown> = {};
  if (command !== 'VERSION' || stdin.trim() !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(stdin);
    } catch {
      throw bad(CniErrorCode.DecodeFailure, 'the network configuration on stdin is not JSON', 'stdin');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw bad(CniErrorCode.DecodeFailure, 'the network configuration on stdin is not a JSON object', 'stdin');
    config = parsed as Record<string, unknown>;
  }
  const cniVersion = typeof config.cniVersion === 'string' ? config.cniVersion : '1.0.0';
  const base = { command, cniVersion, args: {}, pod: undefined, prevResult: undefined, prevIps: [], containerId: '', netns: undefined, ifName: '', network: '' } satisfies CniCall;
  if (command === 'VERSION') return base;

  if (!(SUPPORTED_CNI_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw bad(CniErrorCode.IncompatibleVersion, `cniVersion ${JSON.stringify(config.cniVersion)} is not one of ${SUPPORTED_CNI_VERSIONS.join(', ')}`, 'cniVersion');
  }
  if (typeof config.name !== 'string' || config.name === '') throw bad(CniErrorCode.InvalidConfig, 'the network configuration has no name', 'name');
  const containerId = optString(req, 'containerId') ?? '';
  if (!CONTAINER_ID.test(containerId)) throw bad(CniErrorCode.InvalidEnvironment, `CNI_CONTAINERID ${JSON.stringify(containerId)} is missing or not a container id`, 'CNI_CONTAINERID');
  const ifName = optString(req, 'ifName') ?? '';
  if (ifName === '' || ifName.length > 15 || /[/\s]/.test(ifName)) throw bad(CniErrorCode.InvalidEnvironment, `CNI_IFNAME ${JSON.stringify(ifName)} is not an interface name`, 'CNI_IFNAME');
  const netns = optString(req, 'netns') || undefined;
  if (netns !== undefined && !netns.startsWith('/')) throw bad(CniErrorCode.InvalidEnvironment, `CNI_NETNS ${JSON.stringify(netns)} is not an absolute path`, 'CNI_NETNS');
  if (netns === undefined && command !== 'DEL') throw bad(CniErrorCode.InvalidEnvironment, `CNI_NETNS is required for ${command}`, 'CNI_NETNS');
  const args = parseCniArgs(optString(req, 'args') ?? '');
  let pod: CniPodRef | undefined;
  const ns = args.K8S_POD_NAMESPACE;
  const name = args.K8S_POD_NAME;
  if (ns !== undefined || name !== undefined) {
    if (!ns || !K8S_NAME.test(ns) || !name || !K8S_NAME.test(name)) {
      throw bad(CniErrorCode.InvalidEnvironment, `CNI_ARGS K8S_POD_NAMESPACE/K8S_POD_NAME ${JSON.stringify(`${ns}/${name}`)} do not name a pod`, 'CNI_ARGS');
    }
    pod = { namespace: ns, name, ...(args.K8S_POD_UID ? { uid: args.K8S_POD_UID } : {}) };
  } else if (command !== 'DEL') {
    // Which pod this is decides capture: a call that does not say is refused, never guessed.
    throw bad(CniErrorCode.InvalidEnvironment, 'CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME: skein-cni serves Kubernetes pods', 'CNI_ARGS');
  }
  let prevResult: Record<string, unknown> | undefined;
  if (config.prevResult !== undefined) {
    if (typeof config.prevResult !== 'object' || config.prevResult === null || Array.isArray(config.prevResult)) {
      throw bad(CniErrorCode.InvalidConfig, 'prevResult must be an object', 'prevResult');
    }
    prevResult = config.prevResult as Record<string, unknown>;
  } else if (command === 'ADD' || command === 'CHECK') {
    throw bad(CniErrorCode.InvalidConfig, 'skein-cni must be chained after the pod network plugin: there is no prevResult', 'prevResult');
  }
  const prevIps = prevResult ? resultIps(prevResult) : [];
  return { command, containerId, netns, ifName, args, pod, cniVersion, network: config.name, prevResult, prevIps };
}
