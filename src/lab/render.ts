/**
 * Text the lab writes into the system, rendered from the plan (pure): the Service VIP
 * ruleset of a node (what kube-proxy would program, plus the CNI's masquerade for traffic
 * leaving the cluster) and a pod's /etc/hosts.
 */
import type { LabPlan, PlannedPod } from './plan.js';
import { serviceHostnames } from './plan.js';

export const NFT_TABLE = 'skein_lab_services';

/**
 * nftables for one node netns: DNAT from VIP:port to a random ready endpoint, one chain per
 * Service port; a Service port without endpoints answers with a TCP reset (as kube-proxy's
 * REJECT). The whole table is replaced in one transaction, so an update never half-applies.
 */
export function renderServiceRules(plan: LabPlan): string {
  const chains: string[] = [];
  const elements: string[] = [];
  plan.services.forEach((s, si) => {
    s.ports.forEach((p, pi) => {
      if (p.protocol !== 'TCP') return;
      const chain = `svc_${si}_${pi}`;
      const targets = s.endpoints.filter((e) => e.ready && e.ports[p.name] !== undefined).map((e) => `${e.ip} . ${e.ports[p.name]}`);
      const rule =
        targets.length === 0
          ? 'meta l4proto tcp reject with tcp reset'
          : `meta l4proto tcp dnat ip to numgen random mod ${targets.length} map { ${targets.map((t, i) => `${i} : ${t}`).join(', ')} }`;
      chains.push(`  chain ${chain} {\n    comment "${s.namespace}/${s.name}:${p.name || p.port}"\n    ${rule}\n  }`);
      elements.push(`${s.vip} . ${p.port} : jump ${chain}`);
    });
  });
  const elementsLine = elements.length ? `\n    elements = { ${elements.join(', ')} }` : '';
  // Pods leaving the cluster (to an address that is no pod) leave as their node, as with a
  // CNI's masquerade: hosts outside know no route back to pod CIDRs.
  const podCidrs = plan.nodes.map((n) => n.podCIDR).join(', ');
  return `table ip ${NFT_TABLE}
delete table ip ${NFT_TABLE}
table ip ${NFT_TABLE} {
${chains.join('\n')}
  map services {
    type ipv4_addr . inet_service : verdict${elementsLine}
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr . tcp dport vmap @services
  }
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr . tcp dport vmap @services
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr { ${podCidrs} } ip daddr != { ${podCidrs} } oifname "eth0" masquerade
  }
}
`;
}

/** /etc/hosts of a pod: itself, every Service (short names for its own namespace), every pod. */
export function renderPodHosts(plan: LabPlan, pod: PlannedPod): string {
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', `${pod.ip}\t${pod.name}`];
  for (const s of plan.services) {
    const names = serviceHostnames(s, plan.clusterDomain);
    if (s.namespace === pod.namespace) names.push(s.name);
    lines.push(`${s.vip}\t${names.join(' ')}`);
  }
  return `# written by skein lab ${plan.id}\n${lines.join('\n')}\n`;
}

/** /etc/hosts of a node netns: the nodes by name, every Service. */
export function renderNodeHosts(plan: LabPlan): string {
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
  for (const n of plan.nodes) lines.push(`${n.address}\t${n.name}`);
  lines.push(`${plan.underlayGateway}\tcontrol-plane`);
  for (const s of plan.services) lines.push(`${s.vip}\t${serviceHostnames(s, plan.clusterDomain).join(' ')}`);
  return `# written by skein lab ${plan.id}\n${lines.join('\n')}\n`;
}
