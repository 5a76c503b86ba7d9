/** `skein install` and `skein uninstall`: the cluster's manifests on stdout. */
import { parseArgs } from 'node:util';
import { messageOf } from '../../errors.js';
import { renderManifests, toYaml, uninstallManifests } from './manifests.js';
import { loadValues } from './values.js';

export const INSTALL_USAGE = `usage: skein install [--values FILE] [--namespace NS] [--image IMAGE] | kubectl apply -f -
       skein uninstall [--values FILE] [--namespace NS] | kubectl delete -f -

Prints skein's Kubernetes objects as multi-document YAML: the namespace, the CRDs of skein's
policy kinds, RBAC, the trust-bundle ConfigMap, the controller (Deployment, Services,
PodDisruptionBudget) and the agent DaemonSet (with the install-cni init container).
uninstall prints the same objects in deletion order. Deleting the agents leaves their BPF
programs pinned (pods stay captured, failing closed): then run skein agent --cleanup on each
node to remove the pins and the skein-cni files.

  --values FILE     YAML overriding the defaults: namespace, image, imagePullPolicy,
                    trustDomain, logLevel, controller.{replicas,ports.{config,ca,metrics},resources},
                    agent.{ports.{metrics,ready},resources,pinRoot,runDir}, cni.{binDir,confDir}
  --namespace NS    overrides the values' namespace (default skein-system)
  --image IMAGE     overrides the values' image
`;

export function installCommand(argv: string[], mode: 'install' | 'uninstall' = 'install'): number {
  let values: { values?: string; namespace?: string; image?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: { values: { type: 'string' }, namespace: { type: 'string' }, image: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    process.stderr.write(`skein ${mode}: ${messageOf(err)}\n${INSTALL_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(INSTALL_USAGE);
    return 0;
  }
  try {
    const v = loadValues(values.values, { ...(values.namespace !== undefined ? { namespace: values.namespace } : {}), ...(values.image !== undefined ? { image: values.image } : {}) });
    const manifests = mode === 'install' ? renderManifests(v) : uninstallManifests(v);
    if (mode === 'uninstall') process.stdout.write('# Then, on each node: skein agent --cleanup (BPF links and pins, skein-cni files).\n');
    process.stdout.write(toYaml(manifests));
    return 0;
  } catch (err) {
    const code = (err as { code?: string }).code;
    process.stderr.write(`skein ${mode}: ${messageOf(err)}${code ? ` (${code})` : ''}\n`);
    return 2;
  }
}
