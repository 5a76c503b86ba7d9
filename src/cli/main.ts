/** The `skein` command: dispatches to the subcommands. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../paths.js';
// Commands are imported when run, not up front: every lab workload, agent and controller is
// this same binary, and loading all of them (the Kubernetes client, the lab, the install
// renderer...) cost each process ~150 MB and seconds of start-up on a busy node.

const USAGE = `skein — a sidecarless service mesh

usage: skein <command> [...]

  lab up [FILE] [--no-mesh] bring up a lab cluster with the mesh (default deploy/local/demo.yaml)
  lab up ... --prometheus [--prometheus-port N]  also run Prometheus scraping every agent and
                           the controller, on the host's 127.0.0.1:N (default a free port; lab status shows it)
  lab down                 remove the lab
  lab status [--json]      nodes, pods, IPs, services, logs
  lab exec NS/POD -- CMD   run a command inside a pod (\`skein\` as CMD is this CLI)
  lab gc [--all]           remove what killed runs left behind (--all: every lab)
  lab upgrade-agent NODE   the DaemonSet's rolling update on one node: skein agent --upgrade takes over
  lab up ... --agent-restart-backoff S  base of the agents' restart back-off (default 10, as the kubelet's)
  lab demo [FILE] [--keep] up, traffic between pods, a summary, down
  lab label namespace NAME key=value|key-   change a namespace's labels (as kubectl)
  lab annotate namespace NAME key=value|key- change a namespace's annotations
  lab scale NS/DEPLOYMENT N [--grace MS]    scale a Deployment (pods, endpoints, DNAT)
  lab apply|delete -f FILE put objects (policies, routes...) into the lab's controller, or take them out
  agent --node NAME ...    the node agent (see skein agent --help)
  controller ...           the controller: config stream and mesh CA (see skein controller --help)
  status [--lab ID]        what the controller accepted and refused, connected agents
  top [--lab ID] [--once] [--json]  the mesh's traffic per workload and per edge (rps, success,
                           p50/p99), refreshed live (see skein top --help)
  tap [--lab ID] [--namespace NS --from W --to W --path P]  live sampled requests (method, path,
                           status, latency, identities) (see skein tap --help)
  ca status [--lab ID]     the mesh CA's roots, the rotation under way, each agent's trusted
                           roots and the roots its workload certificates chain to
  ca rotate [--timeout 5m] [--dry-run]  rotate the mesh's root with no failed connection (see
                           skein ca --help); re-run after an interruption to continue
  admin [GET|POST] PATH    a node agent's admin API over its root-only unix socket
                           (--socket PATH, or --lab ID --node NAME; see skein admin --help)
  cni install|uninstall    chain skein-cni into the node's CNI conflist (new meshed pods start
                           captured), or take it out (see skein cni --help)
  audit verify FILE...     check an agent's hash-chained authorization audit trail
  authz check --from NS/POD --to NS/POD:PORT [--method M --path P --header K=V]
                           which policies apply, which rule decides, the decision
  install [--values FILE]  a cluster's manifests on stdout, for kubectl apply -f - (see skein install --help)
  uninstall [--values FILE] the same objects for kubectl delete -f -
  check [--controller H:P ...] is this node (kernel, BTF, cgroup v2, bpffs, capabilities, CNI,
                           agent) and this cluster ready for skein (see skein check --help)
  workload echo|client     the lab's built-in programs (see skein workload --help)
  version                  print the version

lab commands take --lab ID (or SKEIN_LAB) when several labs run; SKEIN_LAB_DIR moves the
lab records (default /run/skein/labs).`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'lab':
      // The lab's supervisor of each agent lives as long as the lab, one per node: it loads
      // only itself, not the lab.
      if (rest[0] === 'supervise-agent') return (await import('./lab-supervise.js')).superviseAgentCommand(rest.slice(1));
      return (await import('./lab.js')).labCommand(rest);
    case 'workload':
      return (await import('./workload.js')).workloadCommand(rest);
    case 'agent': {
      // Folder mode runs the controller's translation in the agent: policies included.
      const [{ runAgent }, { LocalControllerSource }] = await Promise.all([import('../agent/main.js'), import('../controller/local-source.js')]);
      return runAgent(rest, { folderSource: (o) => new LocalControllerSource(o) });
    }
    case 'controller':
      return (await import('../controller/main.js')).runController(rest);
    case 'status':
      return (await import('./status.js')).statusCommand(rest);
    case 'top':
      return (await import('./top.js')).topCommand(rest);
    case 'tap':
      return (await import('./tap.js')).tapCommand(rest);
    case 'admin':
      return (await import('./admin.js')).adminCommand(rest);
    case 'ca':
      return (await import('./ca.js')).caCommand(rest);
    case 'audit':
      return (await import('./audit.js')).auditCommand(rest);
    case 'cni':
      return (await import('./cni.js')).cniCommand(rest);
    case 'authz':
      return (await import('./authz.js')).authzCommand(rest);
    case 'check':
      return (await import('./check/command.js')).checkCommand(rest);
    case 'install':
      return (await import('./install/command.js')).installCommand(rest, 'install');
    case 'uninstall':
      return (await import('./install/command.js')).installCommand(rest, 'uninstall');
    case 'version':
    case '--version': {
      const pkg = JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { version: string };
      process.stdout.write(`skein ${pkg.version} (node ${process.version})\n`);
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`skein: unknown command "${cmd}"\n\n${USAGE}\n`);
      return 2;
  }
}
