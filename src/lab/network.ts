/**
 * The lab's network, made of real kernel objects:
 *
 *   underlay netns ── br0 (172.20.0.1) ── veth ── node netns (eth0 172.20.0.1x, routes to the
 *   other nodes' pod CIDRs, Service DNAT in nftables) ── veth per pod ── pod netns (eth0 with
 *   the pod IP in the node's pod CIDR, every route via the CIDR's first address).
 *
 * Pods are routed, not bridged (Calico's and the ptp plugin's scheme): every packet between
 * pods crosses a node netns at L3, so conntrack sees both directions of Service DNAT, even
 * between pods of one node. The bridge lives in its own netns, so two labs never share an
 * interface or an address.
 *
 * Pod networking is made the way a node's container runtime makes it: by the standard CNI
 * plugins (Debian's containernetworking-plugins: `ptp`, with `static` IPAM given the pod's
 * planned IP in CNI_ARGS — the plan is the lab's IPAM, so nothing is kept between calls and
 * two labs never share an allocation store), driven by the CNI protocol from the node's
 * conflist (cni-runtime.ts), run inside the node's netns. Once the mesh runs, skein-cni is
 * chained into each node's conflist the way `skein cni install` does it on a node.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addressAt, parseCidr } from './ipam.js';
import type { LabPlan, PlannedNode, PlannedPod } from './plan.js';
import { type CniNetworkList, type CniRuntimeCall, cniAdd, cniDel, loadNetworkList, STANDARD_CNI_PLUGIN_DIRS } from './cni-runtime.js';
import { renderNodeHosts, renderPodHosts, renderServiceRules } from './render.js';
import { inNetns, ipBatch, run } from './sys.js';

/** `ip netns exec` bind-mounts /etc/netns/<netns>/hosts over /etc/hosts. */
export const ETC_NETNS = '/etc/netns';

export async function createUnderlay(plan: LabPlan): Promise<void> {
  const bits = parseCidr(plan.underlayCIDR)!.bits;
  await run('ip', ['netns', 'add', plan.underlayNetns]);
  await ipBatch(plan.underlayNetns, [
    'link set lo up',
    `link add ${plan.underlayBridge} type bridge`,
    `addr add ${plan.underlayGateway}/${bits} dev ${plan.underlayBridge}`,
    `link set ${plan.underlayBridge} up`,
  ]);
}

export async function createNode(plan: LabPlan, node: PlannedNode): Promise<void> {
  const bits = parseCidr(plan.underlayCIDR)!.bits;
  await run('ip', ['netns', 'add', node.netns]);
  await run('ip', ['-n', plan.underlayNetns, 'link', 'add', node.underlayIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', node.netns]);
  await ipBatch(plan.underlayNetns, [`link set ${node.underlayIf} master ${plan.underlayBridge}`, `link set ${node.underlayIf} up`]);
  await ipBatch(node.netns, [
    'link set lo up',
    `addr add ${node.address}/${bits} dev eth0`,
    'link set eth0 up',
    ...plan.nodes.filter((n) => n !== node).map((n) => `route add ${n.podCIDR} via ${n.address} dev eth0`),
  ]);
  // A node forwards between its pods and the underlay.
  await inNetns(node.netns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  writeHosts(node.netns, renderNodeHosts(plan));
  await applyServiceRules(plan, node);
}

/** A lab node's CNI folders, under the lab's own directory (never the host's /etc/cni). */
export interface NodeCni {
  confDir: string;
  /** Where `skein cni install` puts skein-cni for this lab (first on CNI_PATH). */
  binDir: string;
  /** ADD results kept for DEL (libcni's cache). */
  cacheDir: string;
}

export function nodeCniOf(labDir: string, node: string): NodeCni {
  return { confDir: join(labDir, 'cni', node, 'net.d'), binDir: join(labDir, 'cni', 'bin'), cacheDir: join(labDir, 'cni', node, 'results') };
}

/** The pod network's conflist of a lab node: ptp + static IPAM, the pod CIDR's first address as gateway. */
export function podNetworkList(): CniNetworkList {
  return {
    cniVersion: '1.0.0',
    name: 'skein-lab',
    plugins: [{ type: 'ptp', ipMasq: false, mtu: 1500, ipam: { type: 'static', routes: [{ dst: '0.0.0.0/0' }] } }],
  };
}

/** The CNI plugins' place: Debian's, overridable (SKEIN_LAB_CNI_PLUGIN_DIR) for other layouts. */
function pluginDirs(cni: NodeCni): string[] {
  const std = process.env.SKEIN_LAB_CNI_PLUGIN_DIR ? [process.env.SKEIN_LAB_CNI_PLUGIN_DIR] : STANDARD_CNI_PLUGIN_DIRS;
  return [cni.binDir, ...std];
}

/** The runtime's side of one pod's CNI calls: its sandbox id, netns, CNI_ARGS. */
export function podCniCall(plan: LabPlan, pod: PlannedPod, cni: NodeCni): CniRuntimeCall {
  const node = plan.nodes.find((n) => n.name === pod.node)!;
  const cidr = parseCidr(node.podCIDR)!;
  return {
    // The sandbox's id, stable per pod (the runtime's pause-container id).
    containerId: createHash('sha256').update(`sandbox:${pod.uid}`).digest('hex'),
    netnsPath: `/run/netns/${pod.netns}`,
    ifName: 'eth0',
    args: {
      IgnoreUnknown: '1',
      K8S_POD_NAMESPACE: pod.namespace,
      K8S_POD_NAME: pod.name,
      K8S_POD_UID: pod.uid,
      IP: `${pod.ip}/${cidr.bits}`,
      GATEWAY: addressAt(cidr, 1),
    },
    binDirs: pluginDirs(cni),
    nodeNetns: node.netns,
    cacheDir: cni.cacheDir,
  };
}

/** Writes the node's pod network conflist (what the pod network's installer does on a node). */
export function writeNodeConflist(cni: NodeCni): void {
  mkdirSync(cni.confDir, { recursive: true });
  mkdirSync(cni.binDir, { recursive: true });
  writeFileSync(join(cni.confDir, '10-skein-lab.conflist'), `${JSON.stringify(podNetworkList(), null, 2)}\n`);
}

/**
 * A pod's sandbox network: its netns, loopback up (the loopback plugin, as containerd runs
 * it), then the node's conflist — ptp and, once the mesh is installed, skein-cni, whose ADD
 * returns only once the agent captured a meshed pod. A failed ADD leaves no netns behind.
 */
export async function createPod(plan: LabPlan, pod: PlannedPod, cni: NodeCni): Promise<Record<string, unknown>> {
  await run('ip', ['netns', 'add', pod.netns]);
  const call = podCniCall(plan, pod, cni);
  try {
    await cniAdd({ cniVersion: '1.0.0', name: 'cni-loopback', plugins: [{ type: 'loopback' }] }, { ...call, ifName: 'lo' });
    const result = await cniAdd(loadNetworkList(cni.confDir).list, call);
    writeHosts(pod.netns, renderPodHosts(plan, pod));
    return result;
  } catch (err) {
    await cniDel(loadNetworkList(cni.confDir).list, call).catch(() => {});
    await deleteNetns(pod.netns);
    throw err;
  }
}

/** The sandbox's teardown: CNI DEL through the chain (skein-cni releases capture), then the netns. */
export async function deletePod(plan: LabPlan, pod: PlannedPod, cni: NodeCni): Promise<void> {
  try {
    await cniDel(loadNetworkList(cni.confDir).list, podCniCall(plan, pod, cni));
  } finally {
    await deleteNetns(pod.netns);
  }
}

/** Replaces the node's Service table in one nft transaction. */
export async function applyServiceRules(plan: LabPlan, node: PlannedNode): Promise<void> {
  await inNetns(node.netns, 'nft', ['-f', '-'], { input: renderServiceRules(plan) });
}

export function writeHosts(netns: string, text: string): void {
  const dir = join(ETC_NETNS, netns);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'hosts'), text);
}

/** Deletes a netns (its interfaces, routes and nft tables go with it) and its /etc/netns folder. */
export async function deleteNetns(netns: string): Promise<void> {
  await run('ip', ['netns', 'delete', netns], { allowFailure: true });
  rmSync(join(ETC_NETNS, netns), { recursive: true, force: true });
}
